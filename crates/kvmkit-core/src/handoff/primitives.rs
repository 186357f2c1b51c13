//! The atomics, locks and thread parking the hand-off is built on: std's, or loom's in the
//! crate's unit tests built with `--cfg loom`, which model-check the protocol (the
//! `loom_tests` of [`super::mailbox`] and [`super`]; the command is in `.ci/run`).
//!
//! Under loom, every operation on these is a point where the model may switch threads, and
//! they may only be used inside `loom::model`; the rest of the crate, and any build that is
//! not the unit tests, keeps std's.

#[cfg(not(all(test, loom)))]
pub(crate) use crate::sync::LockExt;
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::{Mutex, MutexGuard};
#[cfg(not(all(test, loom)))]
pub(crate) use std::thread::{Thread, current, park_timeout, yield_now};

#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering};
#[cfg(all(test, loom))]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(all(test, loom))]
pub(crate) use loom::thread::{Thread, current, yield_now};

/// Poison-recovering locking of loom's mutex, as [`crate::sync::LockExt`] does for std's.
#[cfg(all(test, loom))]
pub(crate) trait LockExt<T> {
    /// Locks, recovering the lock if a thread panicked while holding it.
    fn lock_or_recover(&self) -> MutexGuard<'_, T>;
}

#[cfg(all(test, loom))]
impl<T> LockExt<T> for Mutex<T> {
    fn lock_or_recover(&self) -> MutexGuard<'_, T> {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A timed park. loom has no clock: there a timed park is a park that ends only when the
/// thread is unparked, so a model in which a wake-up is lost ends in a deadlock, which loom
/// reports, instead of being rescued by the timeout.
#[cfg(all(test, loom))]
pub(crate) fn park_timeout(_timeout: std::time::Duration) {
    loom::thread::park();
}
