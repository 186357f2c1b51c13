//! The one counter a vCPU loop reads on every exit to learn whether anything it must react
//! to has changed: a stop or pause request, a device added to or removed from a bus.
//!
//! An exit handled by a built-in device costs tens of nanoseconds, and most of them go to
//! cache misses: `KVM_RUN` evicts the loop's data, so every distinct cache line the loop
//! touches afterwards costs a miss. Polling the stop flag, the pause flag and each bus's
//! generation separately touched three such lines per exit; with one epoch they are read
//! only when it moved.
//!
//! A writer changes its state first and advances the epoch after it (with release
//! ordering); a loop that loads the epoch (with acquire ordering) and finds it moved
//! therefore sees the change when it looks.

use std::sync::atomic::{AtomicU64, Ordering};

/// A machine's epoch: advanced by every change its vCPU loops must notice.
#[derive(Debug, Default)]
pub struct Epoch(AtomicU64);

impl Epoch {
    /// The current value. It only grows (and never reaches [`Epoch::UNSEEN`]).
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Publishes a change made before this call.
    pub fn advance(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    /// A value no epoch takes: what a loop that has looked at nothing yet remembers.
    pub const UNSEEN: u64 = u64::MAX;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn a_reader_that_sees_the_epoch_move_sees_the_change_before_it() {
        let epoch = Arc::new(Epoch::default());
        let flag = Arc::new(AtomicBool::new(false));
        let seen = epoch.current();
        assert_ne!(seen, Epoch::UNSEEN);
        let writer = {
            let (epoch, flag) = (Arc::clone(&epoch), Arc::clone(&flag));
            std::thread::spawn(move || {
                flag.store(true, Ordering::Relaxed);
                epoch.advance();
            })
        };
        while epoch.current() == seen {
            std::hint::spin_loop();
        }
        assert!(flag.load(Ordering::Relaxed));
        writer.join().unwrap();
    }
}
