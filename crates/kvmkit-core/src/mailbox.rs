//! The hand-off between a vCPU thread and the thread that answers its device accesses.
//!
//! The vCPU thread posts an access, then waits for the reply: first spinning for a bounded
//! time, then parking. Spinning matters on virtualized hosts, where a futex sleep/wake between
//! two threads costs tens of microseconds — more than the exit itself — while a reply that
//! arrives during the spin costs about a microsecond. The spin budget bounds the CPU burnt
//! when the answering side is slow.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

const IDLE: u32 = 0;
const WAITING: u32 = 1;
const REPLIED: u32 = 2;
const FAILED: u32 = 3;

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
    /// Marks an access as posted by the current thread, which will call [`Mailbox::wait`].
    pub fn post(&self) {
        let mut waiter = self.waiter.lock().unwrap_or_else(|e| e.into_inner());
        if waiter.is_none() {
            *waiter = Some(std::thread::current());
        }
        drop(waiter);
        self.state.store(WAITING, Ordering::Release);
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
        if self.state.load(Ordering::Acquire) != WAITING {
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
        if self.state.load(Ordering::Acquire) != WAITING {
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

    /// Whether an access is waiting for an answer.
    pub fn is_waiting(&self) -> bool {
        self.state.load(Ordering::Acquire) == WAITING
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn reply_reaches_the_waiter_after_it_parks() {
        let mb = Arc::new(Mailbox::default());
        let waiter = Arc::clone(&mb);
        let t = std::thread::spawn(move || {
            waiter.post();
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
        mb.post();
        mb.fail("boom".into()).unwrap();
        assert_eq!(
            mb.wait(&mut [], Duration::ZERO, || false),
            Answer::Failed("boom".into())
        );
        mb.post();
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
        mb.post();
        assert_eq!(
            mb.reply(&[0; MAX_REPLY + 1]),
            Err(ReplyError::TooLong(MAX_REPLY + 1))
        );
    }
}
