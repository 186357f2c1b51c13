//! What the JS thread is in the middle of, innermost last: the inline runs it drives
//! ([`crate::inline`]) and the streaks of accesses it serves ([`crate::handoff`]), which the
//! binding's argument-free calls act on.

use std::cell::RefCell;

use crate::error::{Result, core};

/// Calls `f` with the innermost entry of one of this thread's `stack`s; `INVALID_STATE`
/// saying that `op` needs `state` if the stack is empty.
pub(crate) fn innermost<T, R>(
    stack: &RefCell<Vec<T>>,
    op: &'static str,
    state: &'static str,
    f: impl FnOnce(&T) -> Result<R>,
) -> Result<R> {
    let s = stack.borrow();
    let top = s
        .last()
        .ok_or_else(|| core(kvmkit_core::Error::InvalidState { op, state }))?;
    f(top)
}
