//! The hand-off between a vCPU thread and the thread that answers its device accesses.
//!
//! The vCPU thread posts an access, then waits for the reply: first spinning for a bounded
//! time, then parking. Whoever answers first claims the access: the thread that was told
//! about it, or one that polled for it (see [`crate::machine::Machine::poll_access`]); a
//! sequence number keeps a late notice from claiming a newer access. Spinning matters on virtualized hosts, where a futex sleep/wake between
//! two threads costs tens of microseconds — more than the exit itself — while a reply that
//! arrives during the spin costs about a microsecond. The spin budget bounds the CPU burnt
//! when the answering side is slow.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::exit::DeviceAccess;
use std::thread::Thread;
use std::time::{Duration, Instant};

const IDLE: u32 = 0;
/// Posted and not yet claimed.
const WAITING: u32 = 1;
const REPLIED: u32 = 2;
const FAILED: u32 = 3;
/// Posted and claimed by the side that will answer it.
const CLAIMED: u32 = 4;

/// The largest reply: string I/O data lives in the vCPU's `kvm_run` page.
pub const MAX_REPLY: usize = 4096;

/// What the waiting vCPU thread gets back.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The handler answered; for reads, the reply bytes are in the buffer passed to `wait`.
    Replied,
    /// The handler failed with this message.
    Failed(String),
    /// The machine is stopping or pausing; the access stays unanswered.
    Cancelled,
}

/// A one-slot mailbox per vCPU.
#[derive(Debug)]
pub struct Mailbox {
    state: AtomicU32,
    seq: AtomicU64,
    access: Mutex<DeviceAccess>,
    reply: Mutex<Reply>,
    waiter: Mutex<Option<Thread>>,
}

#[derive(Debug)]
struct Reply {
    len: usize,
    bytes: Box<[u8; MAX_REPLY]>,
    failure: Option<String>,
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

impl Default for Mailbox {
    fn default() -> Self {
        Mailbox {
            state: AtomicU32::new(IDLE),
            seq: AtomicU64::new(0),
            access: Mutex::new(DeviceAccess::with_capacity(MAX_REPLY)),
            reply: Mutex::new(Reply {
                len: 0,
                bytes: Box::new([0; MAX_REPLY]),
                failure: None,
            }),
            waiter: Mutex::new(None),
        }
    }
}

impl Mailbox {
    /// Posts `access` from the current thread, which will call [`Mailbox::wait`]; sets its
    /// sequence number. The mailbox keeps a copy for [`Mailbox::read`] (reusing its buffer).
    pub fn post(&self, access: &mut DeviceAccess) {
        let mut waiter = self.waiter.lock().unwrap_or_else(|e| e.into_inner());
        if waiter.is_none() {
            *waiter = Some(std::thread::current());
        }
        drop(waiter);
        access.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.access
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone_from(access);
        self.state.store(WAITING, Ordering::SeqCst);
    }

    /// Claims the posted access numbered `seq` (any, if `None`) for answering; false if it
    /// was claimed already, answered, or superseded.
    pub fn claim(&self, seq: Option<u64>) -> bool {
        if self
            .state
            .compare_exchange(WAITING, CLAIMED, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // `post` numbers the access before publishing it, so this is the claimed one's number.
        if seq.is_some_and(|s| s != self.seq.load(Ordering::Acquire)) {
            self.state.store(WAITING, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Calls `f` with the posted access.
    pub fn read<T>(&self, f: impl FnOnce(&DeviceAccess) -> T) -> T {
        f(&self.access.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Waits for the answer to the posted access, copying the reply into `out`.
    /// Returns [`Answer::Cancelled`] as soon as `cancelled()` is true.
    pub fn wait(&self, out: &mut [u8], spin: Duration, cancelled: impl Fn() -> bool) -> Answer {
        let start = Instant::now();
        let mut spins: u32 = 0;
        loop {
            match self.state.load(Ordering::Acquire) {
                REPLIED => {
                    let reply = self.reply.lock().unwrap_or_else(|e| e.into_inner());
                    let n = reply.len.min(out.len());
                    out[..n].copy_from_slice(&reply.bytes[..n]);
                    out[n..].fill(0);
                    self.state.store(IDLE, Ordering::Release);
                    return Answer::Replied;
                }
                FAILED => {
                    let message = self
                        .reply
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .failure
                        .take()
                        .unwrap_or_default();
                    self.state.store(IDLE, Ordering::Release);
                    return Answer::Failed(message);
                }
                _ => {}
            }
            if cancelled() {
                // A reply racing with the cancel is dropped: the machine is stopping.
                self.state.store(IDLE, Ordering::Release);
                return Answer::Cancelled;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || start.elapsed() < spin {
                std::hint::spin_loop();
            } else {
                std::thread::park_timeout(Duration::from_millis(50));
            }
        }
    }

    /// Answers the waiting access with `bytes` (empty for writes).
    pub fn reply(&self, bytes: &[u8]) -> Result<(), ReplyError> {
        if bytes.len() > MAX_REPLY {
            return Err(ReplyError::TooLong(bytes.len()));
        }
        let mut reply = self.reply.lock().unwrap_or_else(|e| e.into_inner());
        if !self.is_waiting() {
            return Err(ReplyError::NotWaiting);
        }
        reply.bytes[..bytes.len()].copy_from_slice(bytes);
        reply.len = bytes.len();
        self.finish(reply, REPLIED);
        Ok(())
    }

    /// Fails the waiting access: the machine stops with `message`.
    pub fn fail(&self, message: String) -> Result<(), ReplyError> {
        let mut reply = self.reply.lock().unwrap_or_else(|e| e.into_inner());
        if !self.is_waiting() {
            return Err(ReplyError::NotWaiting);
        }
        reply.failure = Some(message);
        self.finish(reply, FAILED);
        Ok(())
    }

    fn finish(&self, guard: std::sync::MutexGuard<'_, Reply>, state: u32) {
        self.state.store(state, Ordering::Release);
        drop(guard);
        self.wake();
    }

    /// Wakes the waiting thread if it parked (after a cancel, for example).
    pub fn wake(&self) {
        if let Some(thread) = self
            .waiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            thread.unpark();
        }
    }

    /// Whether an access is waiting for an answer (claimed or not).
    pub fn is_waiting(&self) -> bool {
        matches!(self.state.load(Ordering::Acquire), WAITING | CLAIMED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExitKind;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn access(addr: u64) -> DeviceAccess {
        DeviceAccess {
            kind: ExitKind::IoOut,
            device: 1,
            offset: 0,
            addr,
            size: 1,
            count: 1,
            data: vec![0],
            seq: 0,
        }
    }

    #[test]
    fn reply_reaches_the_waiter_after_it_parks() {
        let mb = Arc::new(Mailbox::default());
        let waiter = Arc::clone(&mb);
        let t = std::thread::spawn(move || {
            waiter.post(&mut access(0));
            let mut out = [0u8; 2];
            let answer = waiter.wait(&mut out, Duration::ZERO, || false);
            (answer, out)
        });
        while !mb.is_waiting() {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(20));
        mb.reply(&[0x34, 0x12]).unwrap();
        assert_eq!(t.join().unwrap(), (Answer::Replied, [0x34, 0x12]));
        assert_eq!(mb.reply(&[1]), Err(ReplyError::NotWaiting));
    }

    #[test]
    fn failure_and_cancel_are_reported() {
        let mb = Mailbox::default();
        mb.post(&mut access(0));
        mb.fail("boom".into()).unwrap();
        assert_eq!(
            mb.wait(&mut [], Duration::ZERO, || false),
            Answer::Failed("boom".into())
        );
        mb.post(&mut access(0));
        let stop = AtomicBool::new(true);
        assert_eq!(
            mb.wait(&mut [], Duration::ZERO, || stop.load(Ordering::Relaxed)),
            Answer::Cancelled
        );
        assert_eq!(mb.reply(&[]), Err(ReplyError::NotWaiting));
    }

    #[test]
    fn oversized_replies_are_refused() {
        let mb = Mailbox::default();
        mb.post(&mut access(0));
        assert_eq!(
            mb.reply(&[0; MAX_REPLY + 1]),
            Err(ReplyError::TooLong(MAX_REPLY + 1))
        );
    }

    #[test]
    fn an_access_is_claimed_once_and_only_by_its_own_number() {
        let mb = Mailbox::default();
        let mut first = access(0x60);
        mb.post(&mut first);
        assert!(
            !mb.claim(Some(first.seq + 1)),
            "a notice for another access"
        );
        assert!(mb.claim(Some(first.seq)));
        assert!(!mb.claim(None), "claimed already");
        assert_eq!(mb.read(|a| a.addr), 0x60);
        mb.reply(&[]).unwrap();
        assert_eq!(mb.wait(&mut [], Duration::ZERO, || false), Answer::Replied);
        let mut second = access(0x62);
        mb.post(&mut second);
        assert!(
            !mb.claim(Some(first.seq)),
            "a late notice for the first access"
        );
        assert!(mb.claim(Some(second.seq)));
        assert_eq!(mb.read(|a| a.addr), 0x62);
    }
}
