//! What the JS thread is in the middle of, innermost last: the inline runs it drives
//! ([`crate::inline`]) and the streaks of accesses it serves ([`crate::handoff`]), which the
//! binding's argument-free calls act on.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::error::{Result, core};

/// Calls `f` with the innermost entry of this thread's `stack`; `INVALID_STATE` saying that
/// `op` needs `state` if the stack is empty.
pub(crate) fn innermost<T: 'static, R>(
    stack: &'static LocalKey<RefCell<Vec<T>>>,
    op: &'static str,
    state: &'static str,
    f: impl FnOnce(&T) -> Result<R>,
) -> Result<R> {
    stack.with(|s| {
        let s = s.borrow();
        let top = s
            .last()
            .ok_or_else(|| core(kvmkit_core::Error::InvalidState { op, state }))?;
        f(top)
    })
}
