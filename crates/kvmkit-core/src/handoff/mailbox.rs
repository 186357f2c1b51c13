//! One vCPU's slot in the hand-off: the access it waits on, and the answer.
//!
//! The vCPU thread posts an access (its record is swapped in, not copied), rings the
//! doorbell unless a thread is polling, and waits for the answer: spinning while that pays
//! (see [`super::spin`]), then parking. The answering thread claims the access, reads it,
//! and replies or fails it; the vCPU hands the reply bytes straight to whoever writes them
//! into `kvm_run`, and takes its record back.

use std::time::Duration;

use crossbeam_utils::CachePadded;

use super::primitives::{self, AtomicU32, LockExt, Mutex, MutexGuard, Ordering, Thread};
use super::spin::{Adaptive, Partner, Spin};
use crate::exit::DeviceAccess;

const IDLE: u32 = 0;
/// Posted and not yet claimed.
const WAITING: u32 = 1;
/// Posted and claimed by the thread that will answer it.
const CLAIMED: u32 = 2;
const REPLIED: u32 = 3;
const FAILED: u32 = 4;
/// Or-ed into `WAITING` or `CLAIMED` by a vCPU about to park: its answer must wake it.
/// (In the state word, so that both sides learn of each other with read-modify-writes on
/// one atomic: the vCPU's `fetch_or` and the answer's `swap` are ordered, and whichever
/// comes second sees the first.)
const PARKED: u32 = 0x100;

/// The largest reply: string I/O data lives in the vCPU's `kvm_run` page.
pub const MAX_REPLY: usize = 4096;

/// How a posted access was answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    /// The handler answered with these bytes (for reads; empty or ignored for writes).
    Replied(&'a [u8]),
    /// The handler failed with this message.
    Failed(String),
    /// The machine is stopping; the access stays unanswered.
    Cancelled,
}

/// Errors of [`Mailbox::reply`] and [`Mailbox::fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// No access is waiting for an answer (never posted, already answered, or cancelled).
    #[error("no device access is waiting for an answer on this vCPU")]
    NotWaiting,
    /// The reply is longer than any access can take.
    #[error("reply of {0} bytes is longer than the maximum of 4096")]
    TooLong(usize),
}

/// A one-slot mailbox per vCPU.
///
/// Laid out by who writes what, since every cache line one side writes and the other then
/// reads costs a transfer between CPUs on each exchange (~50 to 200 ns here, depending on
/// where the host placed the two): what both sides use is together, and what only the
/// vCPU uses (its thread handle, its wait statistics) is on lines of its own, which the
/// answering side touches only to wake a parked vCPU.
#[derive(Debug)]
pub struct Mailbox {
    shared: CachePadded<Shared>,
    vcpu: CachePadded<VcpuOwn>,
}

#[derive(Debug)]
struct Shared {
    state: AtomicU32,
    access: Mutex<DeviceAccess>,
    reply: Mutex<Reply>,
}

#[derive(Debug)]
struct VcpuOwn {
    waiter: Mutex<Option<Thread>>,
    waits: Adaptive,
}

#[derive(Debug)]
struct Reply {
    len: usize,
    /// A reply of up to 8 bytes (every reply but string I/O's), on the mailbox's own line
    /// rather than another one of the heap.
    small: [u8; 8],
    bytes: Box<[u8; MAX_REPLY]>,
    failure: Option<String>,
}

impl Reply {
    /// The reply's bytes.
    fn get(&self) -> &[u8] {
        match self.small.get(..self.len) {
            Some(small) => small,
            None => &self.bytes[..self.len],
        }
    }

    /// Keeps `bytes` (at most `MAX_REPLY`) as the reply.
    fn set(&mut self, bytes: &[u8]) {
        match self.small.get_mut(..bytes.len()) {
            Some(small) => small.copy_from_slice(bytes),
            None => self.bytes[..bytes.len()].copy_from_slice(bytes),
        }
        self.len = bytes.len();
    }
}

impl Default for Mailbox {
    fn default() -> Self {
        Mailbox {
            shared: CachePadded::new(Shared {
                state: AtomicU32::new(IDLE),
                access: Mutex::new(DeviceAccess::with_capacity(MAX_REPLY)),
                reply: Mutex::new(Reply {
                    len: 0,
                    small: [0; 8],
                    bytes: Box::new([0; MAX_REPLY]),
                    failure: None,
                }),
            }),
            vcpu: CachePadded::new(VcpuOwn {
                waiter: Mutex::new(None),
                waits: Adaptive::default(),
            }),
        }
    }
}

impl Mailbox {
    /// Posts `access` from the current thread, which then calls [`Mailbox::wait`]. The
    /// record is swapped with the mailbox's own (no copy); `wait` swaps it back.
    pub fn post(&self, access: &mut DeviceAccess) {
        let mut waiter = self.vcpu.waiter.lock_or_recover();
        if waiter.is_none() {
            *waiter = Some(primitives::current());
        }
        drop(waiter);
        std::mem::swap(&mut *self.shared.access.lock_or_recover(), access);
        // Release publishes the record; `Handoff::exchange` fences before it looks at the
        // poll flag.
        self.shared.state.store(WAITING, Ordering::Release);
    }

    /// Claims the posted access for answering; false if there is none or it was claimed.
    pub fn claim(&self) -> bool {
        // Compare-exchanges only, never a plain load first: a poll's last look must see the
        // latest state (see `Handoff::poll`).
        let state = &self.shared.state;
        let mut expected = WAITING;
        loop {
            let claimed = CLAIMED | (expected & PARKED);
            match state.compare_exchange(expected, claimed, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) if actual & !PARKED == WAITING => expected = actual,
                Err(_) => return false,
            }
        }
    }

    /// Calls `f` with the posted access.
    pub fn read<T>(&self, f: impl FnOnce(&DeviceAccess) -> T) -> T {
        f(&self.shared.access.lock_or_recover())
    }

    /// Waits for the answer to the access posted from `access`, given by a thread that last
    /// ran on `answerer`'s CPU: spinning up to `budget` (less when answers lately took
    /// longer), then parking; stops waiting as soon as `cancelled()`. Passes the answer and
    /// the access (back in `access`) to `complete`.
    pub fn wait<R>(
        &self,
        access: &mut DeviceAccess,
        budget: Duration,
        answerer: &Partner,
        cancelled: impl Fn() -> bool,
        complete: impl FnOnce(&DeviceAccess, Answer<'_>) -> R,
    ) -> R {
        let shared = &*self.shared;
        let mut spin = Spin::new(self.vcpu.waits.limit(budget), answerer);
        let mut spinning = true;
        let answered = |state| state == REPLIED || state == FAILED;
        let state = loop {
            let state = shared.state.load(Ordering::Acquire) & !PARKED;
            if answered(state) {
                break state;
            }
            if cancelled() {
                break IDLE;
            }
            spinning = spinning && spin.pause();
            // Parks only if the flag went in before the answer (see `PARKED`); it stays
            // until the next post, so an answer after a timed-out park still wakes.
            if !spinning
                && !answered(shared.state.fetch_or(PARKED, Ordering::SeqCst))
                && !cancelled()
            {
                primitives::park_timeout(Duration::from_millis(50));
            }
        };
        self.vcpu.waits.learn(spin.elapsed(), budget);
        std::mem::swap(&mut *shared.access.lock_or_recover(), access);
        let mut reply = shared.reply.lock_or_recover();
        let failure = reply.failure.take();
        let answer = match state {
            REPLIED => Answer::Replied(reply.get()),
            FAILED => Answer::Failed(failure.unwrap_or_default()),
            // A reply racing with the cancel is dropped: the machine is stopping.
            _ => Answer::Cancelled,
        };
        let result = complete(access, answer);
        shared.state.store(IDLE, Ordering::Release);
        result
    }

    /// Answers the waiting access with `bytes` (empty for writes).
    pub fn reply(&self, bytes: &[u8]) -> Result<(), ReplyError> {
        if bytes.len() > MAX_REPLY {
            return Err(ReplyError::TooLong(bytes.len()));
        }
        let mut reply = self.shared.reply.lock_or_recover();
        if !self.is_waiting() {
            return Err(ReplyError::NotWaiting);
        }
        reply.set(bytes);
        self.finish(reply, REPLIED);
        Ok(())
    }

    /// Fails the waiting access: the machine stops with `message`.
    pub fn fail(&self, message: String) -> Result<(), ReplyError> {
        let mut reply = self.shared.reply.lock_or_recover();
        if !self.is_waiting() {
            return Err(ReplyError::NotWaiting);
        }
        reply.failure = Some(message);
        self.finish(reply, FAILED);
        Ok(())
    }

    /// Publishes the answer; wakes the vCPU only if it parked (see `wait`), so an answer
    /// to a spinning vCPU touches none of its own lines.
    fn finish(&self, guard: MutexGuard<'_, Reply>, state: u32) {
        let before = self.shared.state.swap(state, Ordering::SeqCst);
        drop(guard);
        if before & PARKED != 0 {
            self.wake();
        }
    }

    /// Wakes the waiting thread if it parked (after a cancel, for example).
    pub fn wake(&self) {
        if let Some(thread) = self.vcpu.waiter.lock_or_recover().as_ref() {
            thread.unpark();
        }
    }

    /// Whether an access is posted and not yet claimed.
    pub fn is_posted(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) & !PARKED == WAITING
    }

    /// Whether an access is waiting for an answer (claimed or not).
    pub fn is_waiting(&self) -> bool {
        matches!(
            self.shared.state.load(Ordering::Acquire) & !PARKED,
            WAITING | CLAIMED
        )
    }
}

/// An answer as owned values (the bytes, or the failure's message if any), and the address of
/// the record handed back.
#[cfg(test)]
type Owned = (Result<Vec<u8>, Option<String>>, u64);

/// The answer as owned values, and the address of the record handed back.
#[cfg(test)]
fn owned(a: &DeviceAccess, answer: Answer<'_>) -> Owned {
    let answer = match answer {
        Answer::Replied(bytes) => Ok(bytes.to_vec()),
        Answer::Failed(message) => Err(Some(message)),
        Answer::Cancelled => Err(None),
    };
    (answer, a.addr)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn reply_reaches_the_waiter_after_it_parks_with_its_record() {
        let mb = Arc::new(Mailbox::default());
        let waiter = Arc::clone(&mb);
        let t = std::thread::spawn(move || {
            let mut a = DeviceAccess::port_read(0x60);
            waiter.post(&mut a);
            waiter.wait(&mut a, Duration::ZERO, &Partner::default(), || false, owned)
        });
        while !mb.is_waiting() {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(mb.claim());
        assert_eq!(mb.read(|a| a.addr), 0x60);
        mb.reply(&[0x34, 0x12]).unwrap();
        assert_eq!(t.join().unwrap(), (Ok(vec![0x34, 0x12]), 0x60));
        assert_eq!(mb.reply(&[1]), Err(ReplyError::NotWaiting));
    }

    #[test]
    fn failure_and_cancel_are_reported() {
        let mb = Mailbox::default();
        let mut a = DeviceAccess::port_read(0);
        mb.post(&mut a);
        mb.fail("boom".into()).unwrap();
        assert_eq!(
            mb.wait(&mut a, Duration::ZERO, &Partner::default(), || false, owned)
                .0,
            Err(Some("boom".into()))
        );
        mb.post(&mut a);
        let stop = AtomicBool::new(true);
        assert_eq!(
            mb.wait(
                &mut a,
                Duration::ZERO,
                &Partner::default(),
                || stop.load(Ordering::Relaxed),
                owned
            )
            .0,
            Err(None)
        );
        assert_eq!(mb.reply(&[]), Err(ReplyError::NotWaiting));
    }

    #[test]
    fn oversized_replies_are_refused() {
        let mb = Mailbox::default();
        mb.post(&mut DeviceAccess::port_read(0));
        assert_eq!(
            mb.reply(&[0; MAX_REPLY + 1]),
            Err(ReplyError::TooLong(MAX_REPLY + 1))
        );
    }

    #[test]
    fn replies_of_every_length_reach_the_waiter_whole() {
        let mb = Mailbox::default();
        for len in [0, 1, 8, 9, MAX_REPLY] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            let mut a = DeviceAccess::port_read(0x60);
            mb.post(&mut a);
            assert!(mb.claim());
            mb.reply(&bytes).unwrap();
            let (answer, _) = mb.wait(&mut a, Duration::ZERO, &Partner::default(), || false, owned);
            assert_eq!(answer, Ok(bytes), "{len} bytes");
        }
    }

    #[test]
    fn an_access_is_claimed_once() {
        let mb = Mailbox::default();
        assert!(!mb.claim(), "nothing posted");
        let mut a = DeviceAccess::port_read(0x60);
        mb.post(&mut a);
        assert!(mb.claim());
        assert!(!mb.claim(), "claimed already");
        mb.reply(&[]).unwrap();
        let _ = mb.wait(&mut a, Duration::ZERO, &Partner::default(), || false, owned);
        assert!(!mb.claim(), "answered");
    }
}

/// Model checks of the mailbox's protocol: loom runs each test under every interleaving of
/// its threads (up to `LOOM_MAX_PREEMPTIONS` preemptions), and fails one that deadlocks, and
/// so also one that loses a wake-up (a timed park is a park there, see
/// [`primitives::park_timeout`]).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Spin budgets of the waiting vCPU: none (it parks at its first miss), and one it never
    /// spends (it only spins, yielding).
    const BUDGETS: [Duration; 2] = [Duration::ZERO, Duration::from_secs(3600)];

    /// Posts reads of `addrs` one after the other on `mb` from a new thread, which waits for
    /// each answer with `budget`; returns the answers.
    fn vcpu(
        mb: &Arc<Mailbox>,
        addrs: &'static [u64],
        budget: Duration,
    ) -> thread::JoinHandle<Vec<Owned>> {
        let mb = Arc::clone(mb);
        thread::spawn(move || {
            let mut a = DeviceAccess::port_read(0);
            addrs
                .iter()
                .map(|&addr| {
                    a.addr = addr;
                    mb.post(&mut a);
                    mb.wait(&mut a, budget, &Partner::default(), || false, owned)
                })
                .collect()
        })
    }

    /// Claims the next access, spinning until there is one.
    fn claim(mb: &Mailbox) {
        while !mb.claim() {
            thread::yield_now();
        }
    }

    #[test]
    fn a_claimed_access_is_answered_once_and_its_record_handed_back() {
        for budget in BUDGETS {
            loom::model(move || {
                let mb = Arc::new(Mailbox::default());
                let t = vcpu(&mb, &[0x60], budget);
                claim(&mb);
                assert!(!mb.claim(), "claimed already");
                assert_eq!(mb.read(|a| a.addr), 0x60);
                mb.reply(&[0x34, 0x12]).unwrap();
                assert_eq!(t.join().unwrap(), [(Ok(vec![0x34, 0x12]), 0x60)]);
                assert_eq!(mb.reply(&[1]), Err(ReplyError::NotWaiting));
                assert!(!mb.claim(), "answered");
            });
        }
    }

    #[test]
    fn of_two_racing_answerers_one_claims_the_access() {
        loom::model(|| {
            let mb = Arc::new(Mailbox::default());
            let t = vcpu(&mb, &[0x60], Duration::ZERO);
            let other = {
                let mb = Arc::clone(&mb);
                thread::spawn(move || mb.claim())
            };
            let mine = mb.claim();
            let theirs = other.join().unwrap();
            assert!(!(mine && theirs), "claimed twice");
            if !(mine || theirs) {
                // Both looked before the post.
                claim(&mb);
            }
            mb.reply(&[1]).unwrap();
            assert_eq!(t.join().unwrap(), [(Ok(vec![1]), 0x60)]);
        });
    }

    #[test]
    fn a_failure_reaches_the_waiter() {
        loom::model(|| {
            let mb = Arc::new(Mailbox::default());
            let t = vcpu(&mb, &[0x60], Duration::ZERO);
            claim(&mb);
            mb.fail("boom".into()).unwrap();
            assert_eq!(t.join().unwrap(), [(Err(Some("boom".into())), 0x60)]);
            assert_eq!(mb.fail(String::new()), Err(ReplyError::NotWaiting));
        });
    }

    #[test]
    fn consecutive_accesses_get_their_own_answers() {
        loom::model(|| {
            let mb = Arc::new(Mailbox::default());
            let t = vcpu(&mb, &[0x60, 0x61], Duration::ZERO);
            for byte in [1, 2] {
                claim(&mb);
                let addr = mb.read(|a| a.addr);
                assert_eq!(addr, 0x5f + u64::from(byte));
                mb.reply(&[byte]).unwrap();
            }
            assert_eq!(
                t.join().unwrap(),
                [(Ok(vec![1]), 0x60), (Ok(vec![2]), 0x61)]
            );
        });
    }
}
