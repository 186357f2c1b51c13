//! Waiting for the other side of the hand-off without stealing its CPU.
//!
//! Both sides of the hand-off wait for each other: a vCPU for its answer, the answering
//! thread for the next access. A futex sleep and wake-up between two threads costs tens of
//! microseconds on a virtualized host — more than the exit itself — so each side first
//! spins. But spinning only pays while the other side runs on another CPU: when the two
//! share one (because something else holds the others), every microsecond spun is taken
//! from the thread being waited for. So each side says which CPU it last ran on
//! ([`Partner`]), and a waiter that finds itself on its partner's CPU yields the CPU between
//! checks instead of spinning; it gives up spinning (to sleep) once its budget is spent. The
//! vCPU side also learns how long answers take ([`Adaptive`]): when they lately took longer
//! than its budget, spinning cannot win, and it sleeps almost at once.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::primitives;

/// What a waiter spins for when spinning has not paid lately: enough for an answer that
/// is already on its way.
pub const MIN_SPIN: Duration = Duration::from_micros(10);

/// Checks between two looks at the clock (under loom, every check is one: each is a point
/// where the model switches threads, and the spin must stay short).
const CHECKS_PER_CLOCK: u32 = if cfg!(all(test, loom)) { 1 } else { 32 };

/// The CPU a thread on one side of the hand-off last ran on, for the other side's waits.
#[derive(Debug)]
pub struct Partner(AtomicI32);

impl Default for Partner {
    fn default() -> Self {
        Partner(AtomicI32::new(-1))
    }
}

impl Partner {
    /// Records the calling thread's CPU.
    pub fn here(&self) {
        // Stored only when it changed: a store takes the line from the partner's CPU, which
        // reads it on every wait.
        let cpu = current_cpu();
        if self.0.load(Ordering::Relaxed) != cpu {
            self.0.store(cpu, Ordering::Relaxed);
        }
    }

    /// Whether the calling thread runs on the CPU the partner last ran on (always under loom,
    /// which runs one thread at a time: a model's waiter must yield, it cannot spin).
    fn shares_cpu(&self) -> bool {
        if cfg!(all(test, loom)) {
            return true;
        }
        let cpu = current_cpu();
        cpu >= 0 && self.0.load(Ordering::Relaxed) == cpu
    }
}

/// The CPU the calling thread runs on, or -1 if unknown.
fn current_cpu() -> i32 {
    // SAFETY: sched_getcpu has no preconditions; it returns -1 on failure.
    unsafe { libc::sched_getcpu() }
}

/// One wait's spinning phase.
#[derive(Debug)]
pub struct Spin<'a> {
    start: Instant,
    limit: Duration,
    checks: u32,
    /// The partner ran on this thread's CPU when the wait last looked.
    sharing: bool,
    partner: &'a Partner,
}

impl<'a> Spin<'a> {
    /// Starts a wait for `partner` that may spin for `limit`.
    pub fn new(limit: Duration, partner: &'a Partner) -> Self {
        Spin {
            start: Instant::now(),
            limit,
            checks: 0,
            sharing: false,
            partner,
        }
    }

    /// Called between two checks of the awaited condition: pauses briefly (spinning, or
    /// yielding the CPU when the partner shares it) and returns true, or returns false once
    /// the spin budget is spent.
    ///
    /// It looks at the clock and at the partner's CPU at the first pause and then every
    /// few (a PAUSE instruction costs less than either); a waiter that shares its partner's
    /// CPU yields at every pause and looks every time, since each yield may hand the CPU
    /// over for a while. A wait that may not spin gives up at its first pause. (Spinning
    /// the pauses between two looks cost a zero-spin poll ~0.85 µs on the AMD host, and a
    /// waiter on its partner's CPU spun them before every yield: measured on the one-CPU
    /// test machine, where both sides of every hand-off share the CPU.)
    pub fn pause(&mut self) -> bool {
        if self.limit.is_zero() {
            return false;
        }
        let look = self.sharing || self.checks.is_multiple_of(CHECKS_PER_CLOCK);
        self.checks = self.checks.wrapping_add(1);
        if look {
            if self.start.elapsed() >= self.limit {
                return false;
            }
            self.sharing = self.partner.shares_cpu();
        }
        if self.sharing {
            primitives::yield_now();
        } else {
            std::hint::spin_loop();
        }
        true
    }

    /// How long the wait has lasted.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Consecutive waits that outlast the budget before a waiter stops spinning for its whole
/// budget.
pub const MISSES_TO_SHRINK: u32 = 8;

/// While shrunk, one wait in this many still spins for the whole budget, to notice when
/// answers are quick again.
pub const PROBE_EVERY: u32 = 16;

/// A spin budget that shrinks when spinning does not pay: after [`MISSES_TO_SHRINK`] waits
/// in a row that outlasted the budget (the answering side is slow, or descheduled), waits
/// spin only for [`MIN_SPIN`] before they sleep, until a wait is quick again. Counting
/// misses rather than averaging wait times keeps a few long stalls from shrinking the
/// budget of a stream of quick answers.
#[derive(Debug, Default)]
pub struct Adaptive {
    misses: AtomicU32,
    waits: AtomicU32,
}

impl Adaptive {
    /// How long the next wait may spin, given the largest budget.
    pub fn limit(&self, budget: Duration) -> Duration {
        let waits = self.waits.fetch_add(1, Ordering::Relaxed);
        if self.misses.load(Ordering::Relaxed) < MISSES_TO_SHRINK
            || waits.is_multiple_of(PROBE_EVERY)
        {
            budget
        } else {
            MIN_SPIN.min(budget)
        }
    }

    /// Accounts for a wait that lasted `waited`, against the largest `budget`.
    pub fn learn(&self, waited: Duration, budget: Duration) {
        let misses = if waited <= budget {
            0
        } else {
            (self.misses.load(Ordering::Relaxed) + 1).min(MISSES_TO_SHRINK)
        };
        self.misses.store(misses, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn spinning_stops_once_the_budget_is_spent() {
        let partner = Partner::default();
        partner.here();
        let mut spin = Spin::new(Duration::from_micros(50), &partner);
        while spin.pause() {}
        assert!(spin.elapsed() >= Duration::from_micros(50));
    }

    #[test]
    fn a_wait_that_may_not_spin_gives_up_at_its_first_pause() {
        let partner = Partner::default();
        assert!(!Spin::new(Duration::ZERO, &partner).pause());
    }

    #[test]
    fn a_budget_that_answers_outgrow_shrinks_until_one_is_quick_again() {
        let budget = Duration::from_micros(200);
        let a = Adaptive::default();
        assert_eq!(a.limit(budget), budget);
        for _ in 0..MISSES_TO_SHRINK {
            a.learn(Duration::from_millis(2), budget);
        }
        let limits: Vec<_> = (0..PROBE_EVERY).map(|_| a.limit(budget)).collect();
        assert_eq!(limits.iter().filter(|&&l| l == MIN_SPIN).count(), 15);
        assert!(limits.contains(&budget), "one wait in {PROBE_EVERY} probes");
        a.learn(Duration::from_micros(3), budget);
        assert_eq!(a.limit(budget), budget);
    }

    #[test]
    fn a_few_long_stalls_do_not_shrink_the_budget() {
        let budget = Duration::from_micros(200);
        let a = Adaptive::default();
        for i in 0..100 {
            let waited = if i % 4 == 0 {
                Duration::from_millis(6)
            } else {
                Duration::from_micros(2)
            };
            a.learn(waited, budget);
            assert_eq!(a.limit(budget), budget);
        }
    }
}
