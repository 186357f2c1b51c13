//! The atomics, locks, condition variables and thread parking the hand-off is built on:
//! std's, or loom's in the crate's unit tests built with `--cfg loom`, which model-check the
//! protocol (the `loom_tests` of [`super::mailbox`], [`super::posted`] and [`super`]; the
//! command is in `.ci/run`).
//!
//! Under loom, every operation on these is a point where the model may switch threads, and
//! they may only be used inside `loom::model`; the rest of the crate, and any build that is
//! not the unit tests, keeps std's.

#[cfg(not(all(test, loom)))]
pub(crate) use crate::sync::{CondvarExt, LockExt};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, Ordering, fence};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(all(test, loom)))]
pub(crate) use std::thread::{Thread, current, park_timeout, yield_now};

#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering, fence};
#[cfg(all(test, loom))]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
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

/// Poison-recovering timed waits on loom's condition variable, as [`crate::sync::CondvarExt`]
/// does for std's. loom has no clock: its timed wait ends only when the condition variable
/// is notified, so, as with [`park_timeout`], a lost notification ends the model in a
/// deadlock instead of being rescued by the timeout.
#[cfg(all(test, loom))]
pub(crate) trait CondvarExt {
    /// Waits for a notification (or `timeout`, outside loom), recovering the lock if its
    /// holder panicked.
    fn wait_timeout_or_recover<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: std::time::Duration,
    ) -> MutexGuard<'a, T>;
}

#[cfg(all(test, loom))]
impl CondvarExt for Condvar {
    fn wait_timeout_or_recover<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: std::time::Duration,
    ) -> MutexGuard<'a, T> {
        self.wait_timeout(guard, timeout)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }
}

/// A timed park. loom has no clock: there a timed park is a park that ends only when the
/// thread is unparked, so a model in which a wake-up is lost ends in a deadlock, which loom
/// reports, instead of being rescued by the timeout.
#[cfg(all(test, loom))]
pub(crate) fn park_timeout(_timeout: std::time::Duration) {
    loom::thread::park();
}
