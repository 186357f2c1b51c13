//! The machine's lifecycle: its state, how many vCPUs are running or parked, and how the run
//! ends.
//!
//! One owner for the invariants the run loops and the machine's methods share:
//! - a run starts once, from `created`; pause and resume move between `running` and `paused`;
//! - once every live vCPU has parked, [`ExitHandler::on_paused`] is called (once per pause);
//! - the first outcome recorded wins, and when the last vCPU leaves, the outcome is settled
//!   (`halted`, or `stopped` if a stop was asked for) and [`ExitHandler::on_end`] is called
//!   exactly once;
//! - `closed` is final.
//!
//! Nothing here touches KVM, so every transition is unit-tested.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::epoch::Epoch;
use crate::error::{Error, Result};
use crate::exit::Outcome;
use crate::sync::{CondvarExt, LockExt};
use crate::vm::handler::ExitHandler;

/// The lifecycle state of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Configured, not started: registers and memory may be set up.
    Created,
    /// vCPU threads are running.
    Running,
    /// A pause was asked for (every vCPU stops at its next pause point).
    Paused,
    /// The run ended; the outcome is known.
    Ended,
    /// Resources are released.
    Closed,
}

impl State {
    /// The state's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Ended => "ended",
            State::Closed => "closed",
        }
    }
}

/// The lifecycle of one machine, shared by its owner and its vCPU loops.
pub(crate) struct Lifecycle {
    control: Mutex<Control>,
    changed: Condvar,
    /// Read by the loops when `epoch` moved, so kept outside the lock.
    stop: AtomicBool,
    pause: AtomicBool,
    /// Advanced after either flag is raised.
    epoch: Arc<Epoch>,
}

struct Control {
    state: State,
    /// vCPU loops that have not left yet.
    live: u32,
    /// Of those, how many wait at a pause point.
    parked: u32,
    outcome: Option<Outcome>,
    handler: Option<Arc<dyn ExitHandler>>,
}

impl Lifecycle {
    /// A machine's lifecycle, announcing stop and pause requests through `epoch`.
    pub(crate) fn new(epoch: Arc<Epoch>) -> Self {
        Lifecycle {
            control: Mutex::new(Control {
                state: State::Created,
                live: 0,
                parked: 0,
                outcome: None,
                handler: None,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            pause: AtomicBool::new(false),
            epoch,
        }
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock_or_recover()
    }

    /// The current state.
    pub(crate) fn state(&self) -> State {
        self.control().state
    }

    /// The outcome, once one was recorded.
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        self.control().outcome.clone()
    }

    /// The handler of the run, from its start until the machine closes.
    pub(crate) fn handler(&self) -> Option<Arc<dyn ExitHandler>> {
        self.control().handler.clone()
    }

    /// Whether a stop was asked for: every vCPU loop leaves at its next check.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Whether a pause was asked for: every vCPU parks at its next pause point.
    pub(crate) fn pausing(&self) -> bool {
        self.pause.load(Ordering::Acquire)
    }

    /// Starts a run of `vcpus` loops reporting to `handler`.
    ///
    /// # Errors
    ///
    /// `INVALID_STATE` unless the machine was never started.
    pub(crate) fn begin(&self, handler: Arc<dyn ExitHandler>, vcpus: u32) -> Result<()> {
        let mut c = self.control();
        if c.state != State::Created {
            return Err(Error::InvalidState {
                op: "start",
                state: c.state.name(),
            });
        }
        c.handler = Some(handler);
        c.state = State::Running;
        c.live = vcpus;
        Ok(())
    }

    /// Moves from `from` to `to` for `op` (a pause or a resume), raising or clearing the
    /// pause flag; a resume releases the parked vCPUs.
    ///
    /// # Errors
    ///
    /// `INVALID_STATE`, naming the current state, unless the machine is in `from`.
    pub(crate) fn transition(&self, op: &'static str, from: State, to: State) -> Result<()> {
        let mut c = self.control();
        if c.state != from {
            return Err(Error::InvalidState {
                op,
                state: c.state.name(),
            });
        }
        c.state = to;
        self.pause.store(to == State::Paused, Ordering::Release);
        self.epoch.advance();
        drop(c);
        self.changed.notify_all();
        Ok(())
    }

    /// Records `outcome` unless one was recorded first. The caller stops the vCPUs.
    pub(crate) fn record(&self, outcome: Outcome) {
        self.control().outcome.get_or_insert(outcome);
    }

    /// Raises the stop flag and releases parked vCPUs. The caller wakes the vCPUs waiting
    /// elsewhere (in the hand-off, inside `KVM_RUN`).
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.epoch.advance();
        // Taking the lock orders the flag before a parking vCPU's check of it.
        drop(self.control());
        self.changed.notify_all();
    }

    /// Waits at a pause point until resumed or stopped. The last live vCPU to park reports
    /// the pause.
    pub(crate) fn park(&self) {
        let mut c = self.control();
        c.parked += 1;
        if c.parked == c.live {
            let handler = c.handler.clone();
            drop(c);
            if let Some(h) = handler {
                h.on_paused();
            }
            c = self.control();
        }
        while self.pausing() && !self.stopping() {
            c = self.changed.wait_or_recover(c);
        }
        c.parked -= 1;
    }

    /// Accounts for a vCPU loop leaving (or one that never ran). The last one out settles
    /// the outcome, moves the machine to `ended` and reports the end; one leaving while all
    /// others are parked completes a pause.
    pub(crate) fn leave(&self) {
        let mut c = self.control();
        c.live = c.live.saturating_sub(1);
        let handler = c.handler.clone();
        if c.live > 0 {
            let all_parked = c.state == State::Paused && c.parked == c.live;
            drop(c);
            if let (true, Some(h)) = (all_parked, handler) {
                h.on_paused();
            }
            return;
        }
        let settled = if self.stopping() {
            Outcome::Stopped
        } else {
            Outcome::Halted
        };
        let outcome = c.outcome.get_or_insert(settled).clone();
        if c.state != State::Closed {
            c.state = State::Ended;
        }
        drop(c);
        self.changed.notify_all();
        if let Some(h) = handler {
            h.on_end(&outcome);
        }
    }

    /// Moves to `closed` and lets go of the handler. The caller has joined every vCPU loop.
    pub(crate) fn close(&self) {
        let mut c = self.control();
        c.state = State::Closed;
        c.handler = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    /// Counts the lifecycle calls it gets.
    #[derive(Default)]
    struct Recorder {
        paused: AtomicU32,
        ended: Mutex<Vec<Outcome>>,
    }

    impl ExitHandler for Recorder {
        fn on_access(&self) {}
        fn on_posted(&self) {}
        fn on_output(&self, _: u32) {}
        fn on_paused(&self) {
            self.paused.fetch_add(1, Ordering::SeqCst);
        }
        fn on_end(&self, outcome: &Outcome) {
            self.ended.lock_or_recover().push(outcome.clone());
        }
    }

    fn running(vcpus: u32) -> (Arc<Lifecycle>, Arc<Recorder>) {
        let life = Arc::new(Lifecycle::new(Arc::default()));
        let recorder = Arc::new(Recorder::default());
        life.begin(Arc::clone(&recorder) as Arc<dyn ExitHandler>, vcpus)
            .unwrap();
        (life, recorder)
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..2000 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("timed out waiting until {what}");
    }

    #[test]
    fn a_run_starts_once_and_only_from_created() {
        let (life, recorder) = running(1);
        assert_eq!(life.state(), State::Running);
        let again = life.begin(recorder, 1).unwrap_err();
        assert_eq!(again.code(), "INVALID_STATE");
        assert!(again.to_string().contains("running"), "{again}");
    }

    #[test]
    fn pause_and_resume_move_between_running_and_paused_only() {
        let (life, _) = running(1);
        let err = life
            .transition("resume", State::Paused, State::Running)
            .unwrap_err();
        assert!(err.to_string().contains("running"), "{err}");
        life.transition("pause", State::Running, State::Paused)
            .unwrap();
        assert!(life.pausing());
        life.transition("resume", State::Paused, State::Running)
            .unwrap();
        assert!(!life.pausing());
    }

    #[test]
    fn the_last_vcpu_out_settles_halted_and_reports_the_end_once() {
        let (life, recorder) = running(2);
        life.leave();
        assert_eq!(life.state(), State::Running);
        assert!(recorder.ended.lock_or_recover().is_empty());
        life.leave();
        assert_eq!(life.state(), State::Ended);
        assert_eq!(life.outcome(), Some(Outcome::Halted));
        assert_eq!(*recorder.ended.lock_or_recover(), [Outcome::Halted]);
    }

    #[test]
    fn a_stop_settles_stopped_but_the_first_recorded_outcome_wins() {
        let (life, recorder) = running(1);
        life.request_stop();
        life.leave();
        assert_eq!(life.outcome(), Some(Outcome::Stopped));

        let (life, _) = running(1);
        life.record(Outcome::TripleFault { vcpu: 0 });
        life.record(Outcome::Stopped);
        life.request_stop();
        life.leave();
        assert_eq!(life.outcome(), Some(Outcome::TripleFault { vcpu: 0 }));
        assert_eq!(*recorder.ended.lock_or_recover(), [Outcome::Stopped]);
    }

    #[test]
    fn pause_resume_and_stop_each_advance_the_epoch_after_raising_their_flag() {
        let epoch = Arc::new(Epoch::default());
        let life = Lifecycle::new(Arc::clone(&epoch));
        life.begin(Arc::new(Recorder::default()), 1).unwrap();
        let before = epoch.current();
        life.transition("pause", State::Running, State::Paused)
            .unwrap();
        assert!(epoch.current() > before && life.pausing());
        let paused = epoch.current();
        life.transition("resume", State::Paused, State::Running)
            .unwrap();
        assert!(epoch.current() > paused && !life.pausing());
        let resumed = epoch.current();
        life.request_stop();
        assert!(epoch.current() > resumed && life.stopping());
    }

    #[test]
    fn the_pause_is_reported_once_all_live_vcpus_park_and_resume_releases_them() {
        let (life, recorder) = running(2);
        life.transition("pause", State::Running, State::Paused)
            .unwrap();
        let parkers: Vec<_> = (0..2)
            .map(|_| {
                let life = Arc::clone(&life);
                std::thread::spawn(move || life.park())
            })
            .collect();
        wait_until("both park", || recorder.paused.load(Ordering::SeqCst) == 1);
        life.transition("resume", State::Paused, State::Running)
            .unwrap();
        for p in parkers {
            p.join().unwrap();
        }
        assert_eq!(recorder.paused.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_vcpu_leaving_while_the_others_are_parked_completes_the_pause() {
        let (life, recorder) = running(2);
        life.transition("pause", State::Running, State::Paused)
            .unwrap();
        let parker = {
            let life = Arc::clone(&life);
            std::thread::spawn(move || life.park())
        };
        wait_until("one parks", || life.control().parked == 1);
        assert_eq!(recorder.paused.load(Ordering::SeqCst), 0);
        life.leave();
        assert_eq!(recorder.paused.load(Ordering::SeqCst), 1);
        life.request_stop();
        parker.join().unwrap();
        life.leave();
        assert_eq!(life.outcome(), Some(Outcome::Stopped));
    }

    #[test]
    fn closed_is_final_and_drops_the_handler() {
        let (life, _) = running(1);
        life.close();
        life.leave();
        assert_eq!(life.state(), State::Closed);
        assert!(life.handler().is_none());
    }
}
