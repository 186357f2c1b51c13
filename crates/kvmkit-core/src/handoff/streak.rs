//! The flag by which a thread taking records in a streak (accesses, posted writes) tells
//! the vCPUs not to ring for what it will come back for.
//!
//! Only the taking thread writes it. A vCPU that published a record looks at it after a
//! fence ([`StreakFlag::must_ring`]); the taker lowers it with a fence before its last look
//! ([`StreakFlag::lower`]): so either the vCPU sees it down and rings, or the taker's last
//! look finds the record. (Fences rather than SeqCst accesses alone: loom checks this
//! store-buffering pattern only with fences, as it models SeqCst accesses as AcqRel.) The
//! flag has a cache line of its own: the vCPUs read it on every record.

use crossbeam_utils::CachePadded;

use super::primitives::{AtomicBool, Ordering, fence};

/// A taker's streak flag; down when no streak runs.
#[derive(Debug, Default)]
pub(super) struct StreakFlag(CachePadded<AtomicBool>);

impl StreakFlag {
    /// Raises the flag (the taker starts or goes on with a streak). Only the taker writes
    /// it, so it reads its own last store here, and a raised flag is not written again.
    pub(super) fn raise(&self) {
        if !self.0.load(Ordering::Relaxed) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    /// Lowers the flag, ordered before the taker's next look at the records; false if it
    /// was down already (nothing was left unrung).
    pub(super) fn lower(&self) -> bool {
        if !self.0.load(Ordering::Relaxed) {
            return false;
        }
        self.0.store(false, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        true
    }

    /// Whether a vCPU that has just published a record must ring for it: the flag is down.
    pub(super) fn must_ring(&self) -> bool {
        fence(Ordering::SeqCst);
        !self.0.load(Ordering::Relaxed)
    }
}
