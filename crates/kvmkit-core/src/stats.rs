//! Per-vCPU exit counters and a latency histogram, written only by the vCPU's own thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::exit::ExitKind;

/// Number of histogram buckets; bucket `i` counts handling times in `[2^(i-1), 2^i)` ns.
pub const LATENCY_BUCKETS: usize = 40;

/// Live counters of one vCPU.
#[derive(Debug)]
pub struct VcpuStats {
    exits: [AtomicU64; ExitKind::COUNT],
    latency: [AtomicU64; LATENCY_BUCKETS],
}

/// A copy of one vCPU's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Exits by [`ExitKind`] index.
    pub exits: [u64; ExitKind::COUNT],
    /// Host handling time per exit (from `KVM_RUN` returning to re-entering it), by
    /// power-of-two nanosecond bucket.
    pub latency: [u64; LATENCY_BUCKETS],
}

impl Default for VcpuStats {
    fn default() -> Self {
        VcpuStats {
            exits: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The histogram bucket for `d`.
pub fn bucket(d: Duration) -> usize {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    ((u64::BITS - ns.leading_zeros()) as usize).min(LATENCY_BUCKETS - 1)
}

impl VcpuStats {
    /// Counts one exit of `kind`.
    pub fn count(&self, kind: ExitKind) {
        // Only the owning vCPU thread writes, so a relaxed load-add-store is exact and cheaper
        // than a locked read-modify-write.
        let c = &self.exits[kind as usize];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Records how long the host spent handling one exit.
    pub fn record_latency(&self, d: Duration) {
        let c = &self.latency[bucket(d)];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            exits: std::array::from_fn(|i| self.exits[i].load(Ordering::Relaxed)),
            latency: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two() {
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_nanos(1)), 1);
        assert_eq!(bucket(Duration::from_nanos(1023)), 10);
        assert_eq!(bucket(Duration::from_nanos(1024)), 11);
        assert_eq!(bucket(Duration::from_secs(100_000)), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn counts_by_kind() {
        let s = VcpuStats::default();
        s.count(ExitKind::IoOut);
        s.count(ExitKind::IoOut);
        s.record_latency(Duration::from_micros(3));
        let snap = s.snapshot();
        assert_eq!(snap.exits[ExitKind::IoOut as usize], 2);
        assert_eq!(snap.latency.iter().sum::<u64>(), 1);
    }
}
