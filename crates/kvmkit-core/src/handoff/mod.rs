//! The hand-off of guest accesses to the thread that answers them (the Node binding's JS
//! thread): the one carrier between the vCPU loops and user devices.
//!
//! Two kinds of record travel through it:
//! - an **access** a vCPU waits on ([`DeviceAccess`]), one per vCPU at a time, in that
//!   vCPU's [`mailbox::Mailbox`];
//! - a **posted write** no vCPU waits on ([`PostedWrite`]), queued in order in the
//!   [`posted::PostedQueue`].
//!
//! Both are announced by payload-less doorbells ([`ExitHandler::on_access`],
//! [`ExitHandler::on_posted`]); the answering thread then takes the records itself: accesses
//! with [`Handoff::poll`], posted writes with [`Handoff::take_posted`]. While a thread polls,
//! vCPUs do not ring: a streak of accesses is answered by one thread that stays awake, with
//! one call per access when it answers and polls at once ([`Handoff::reply_and_poll`]).
//! Later record kinds (a virtio request, a batch of descriptor chains) are further queues
//! behind the same doorbells.

pub mod mailbox;
pub mod posted;
mod primitives;
pub mod spin;
mod streak;

use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::error::{Error, Result};
use crate::exit::DeviceAccess;
use crate::vm::handler::ExitHandler;
use mailbox::{Answer, Mailbox, ReplyError};
use posted::{PostedQueue, PostedWrite};
use primitives::{AtomicBool, Ordering};
use spin::{Partner, Spin};
use streak::StreakFlag;

/// The hand-off of one machine.
///
/// The fields written on every exchange (the streak flags, the posted queue's lock) have
/// cache lines of their own, apart from the read-mostly ones every wait looks at (see
/// [`Mailbox`] on what a shared line costs).
#[derive(Debug)]
pub struct Handoff {
    mailboxes: Vec<Mailbox>,
    posted: CachePadded<PostedQueue>,
    /// A thread is in [`Handoff::poll`]: vCPUs leave their accesses to it without ringing.
    poller_active: StreakFlag,
    /// A thread takes posted writes in a streak ([`Handoff::take_posted_streak`]): vCPUs
    /// leave them to it without ringing.
    posted_taker: StreakFlag,
    /// The machine is stopping: nobody waits any more.
    cancelled: AtomicBool,
    /// The longest a vCPU spins for its answer.
    spin: Duration,
    /// Where the answering thread last ran, for the vCPUs' waits.
    answerer: Partner,
    /// Where the vCPU that posted last ran, for the answering thread's polls.
    poster: Partner,
}

impl Handoff {
    /// A hand-off for `vcpus` vCPUs that spin up to `spin` for their answers.
    pub(crate) fn new(vcpus: usize, spin: Duration) -> Self {
        Handoff {
            mailboxes: (0..vcpus).map(|_| Mailbox::default()).collect(),
            posted: CachePadded::new(PostedQueue::default()),
            poller_active: StreakFlag::default(),
            posted_taker: StreakFlag::default(),
            cancelled: AtomicBool::new(false),
            spin,
            answerer: Partner::default(),
            poster: Partner::default(),
        }
    }

    /// Whether the machine is stopping.
    pub(crate) fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Stops every wait: vCPUs waiting for an answer or for room in the posted queue give up.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        for mb in &self.mailboxes {
            mb.wake();
        }
        self.posted.wake();
    }

    /// Posts `access` for vCPU `vcpu`, rings `handler`'s doorbell unless a thread polls,
    /// waits for the answer and passes it to `complete` with the access (back in `access`).
    pub(crate) fn exchange<R>(
        &self,
        vcpu: u32,
        access: &mut DeviceAccess,
        handler: &dyn ExitHandler,
        complete: impl FnOnce(&DeviceAccess, Answer<'_>) -> R,
    ) -> R {
        let mailbox = &self.mailboxes[vcpu as usize];
        self.poster.here();
        mailbox.post(access);
        // Unless a poller's last look finds the access (see `streak`).
        if self.poller_active.must_ring() {
            handler.on_access();
        }
        mailbox.wait(
            access,
            self.spin,
            &self.answerer,
            || self.cancelled(),
            complete,
        )
    }

    /// Queues a posted write, ringing `handler`'s doorbell when the queue was empty and no
    /// thread takes writes in a streak; false if the machine stopped while the queue was
    /// full.
    pub(crate) fn post_write(&self, write: PostedWrite, handler: &dyn ExitHandler) -> bool {
        self.poster.here();
        match self.posted.push(write, || self.cancelled()) {
            // Unless a taker's last look finds the write (see `streak`).
            Some(true) => {
                if self.posted_taker.must_ring() {
                    handler.on_posted();
                }
            }
            Some(false) => {}
            None => return false,
        }
        true
    }

    /// Waits up to `spin` for any vCPU to post an access; claims it and passes it to `take`
    /// with the vCPU's index. Returns false if none came.
    ///
    /// While a thread polls, vCPUs skip [`ExitHandler::on_access`]: the thread answering
    /// exits stays awake while they stream in, instead of being woken for each one. It
    /// yields its CPU while it waits when the vCPU that posted last shares it (see
    /// [`spin`]), so it does not hold up the vCPU it waits for.
    pub fn poll(&self, spin: Duration, take: impl FnOnce(u32, &DeviceAccess)) -> bool {
        self.poll_as(spin, take, false)
    }

    /// Polls as [`Handoff::poll`] does, as one of a streak: a poll that finds an access
    /// leaves the vCPUs not ringing, since the thread comes back for more — with another
    /// poll, or with [`Handoff::end_streak`], which it must call when it stops polling
    /// without a poll that found nothing. (The poll flag then stays as it is from one
    /// access to the next, instead of crossing between the two threads' CPUs twice per
    /// access.)
    pub fn poll_streak(&self, spin: Duration, take: impl FnOnce(u32, &DeviceAccess)) -> bool {
        self.poll_as(spin, take, true)
    }

    fn poll_as(&self, spin: Duration, take: impl FnOnce(u32, &DeviceAccess), streak: bool) -> bool {
        let claim_any = || self.mailboxes.iter().position(Mailbox::claim);
        self.answerer.here();
        self.poller_active.raise();
        let mut waiting = Spin::new(spin, &self.poster);
        let mut found = None;
        while !self.cancelled() {
            found = claim_any();
            if found.is_some() || !waiting.pause() {
                break;
            }
        }
        if found.is_none() || !streak {
            self.poller_active.lower();
            // A vCPU that saw the flag just before it dropped left its access here: take it.
            found = found.or_else(claim_any);
        }
        match found {
            Some(i) => {
                self.mailboxes[i].read(|a| take(i as u32, a));
                true
            }
            None => false,
        }
    }

    /// Ends a streak of polls (see [`Handoff::poll_streak`]): from now on vCPUs ring for their
    /// accesses. Returns whether one is waiting unclaimed, posted while no ring was due:
    /// the caller then rings for it.
    pub fn end_streak(&self) -> bool {
        self.poller_active.lower() && self.mailboxes.iter().any(Mailbox::is_posted)
    }

    /// Answers the access vCPU `vcpu` waits on (the bytes read; empty for writes).
    ///
    /// # Errors
    ///
    /// `NO_SUCH_VCPU`, `NOT_WAITING` when the vCPU waits on nothing (answered already, or the
    /// machine stopped), `REPLY_TOO_LONG` beyond 4096 bytes.
    pub fn reply(&self, vcpu: u32, bytes: &[u8]) -> Result<()> {
        self.mailbox(vcpu)?
            .reply(bytes)
            .map_err(|e| reply_error(vcpu, e))
    }

    /// Answers the access vCPU `vcpu` waits on, then polls for the next one as
    /// [`Handoff::poll`] does: one call per access for a thread answering a streak.
    ///
    /// # Errors
    ///
    /// As [`Handoff::reply`]; nothing is polled then.
    pub fn reply_and_poll(
        &self,
        vcpu: u32,
        bytes: &[u8],
        spin: Duration,
        take: impl FnOnce(u32, &DeviceAccess),
    ) -> Result<bool> {
        self.reply(vcpu, bytes)?;
        Ok(self.poll(spin, take))
    }

    /// Fails the access vCPU `vcpu` waits on: the machine stops with `message`.
    ///
    /// # Errors
    ///
    /// `NO_SUCH_VCPU`, or `NOT_WAITING` when the vCPU waits on nothing.
    pub fn fail(&self, vcpu: u32, message: String) -> Result<()> {
        self.mailbox(vcpu)?
            .fail(message)
            .map_err(|e| reply_error(vcpu, e))
    }

    /// Calls `f` with the access vCPU `vcpu` waits on (its string-I/O bytes, say).
    ///
    /// # Errors
    ///
    /// `NO_SUCH_VCPU`.
    pub fn read<T>(&self, vcpu: u32, f: impl FnOnce(&DeviceAccess) -> T) -> Result<T> {
        Ok(self.mailbox(vcpu)?.read(f))
    }

    /// Moves every queued posted write into `out`, oldest first.
    pub fn take_posted(&self, out: &mut Vec<PostedWrite>) {
        self.posted.drain_into(out);
    }

    /// Moves the queued posted writes into `out`, oldest first, as one take of a streak:
    /// if none is queued, waits up to `spin` for one (yielding as [`Handoff::poll`] does),
    /// unless an access is posted meanwhile — the thread must go and answer it.
    ///
    /// While a thread takes writes this way, vCPUs do not ring for theirs: a take that
    /// finds writes leaves it so, since the thread comes back for more — with another
    /// take, or with [`Handoff::end_posted_streak`], which it must call when it stops
    /// taking without a take that found nothing. So a guest that streams posted writes
    /// costs no doorbell per write while Node keeps up.
    pub fn take_posted_streak(&self, spin: Duration, out: &mut Vec<PostedWrite>) {
        self.answerer.here();
        self.posted_taker.raise();
        let mut waiting = Spin::new(spin, &self.poster);
        while self.posted.is_empty()
            && !self.cancelled()
            && !self.mailboxes.iter().any(Mailbox::is_posted)
            && waiting.pause()
        {}
        self.posted.drain_into(out);
        if out.is_empty() {
            self.posted_taker.lower();
            // A write queued by a vCPU that saw the flag just before it dropped.
            self.posted.drain_into(out);
        }
    }

    /// Ends a streak of takes (see [`Handoff::take_posted_streak`]): from now on vCPUs ring
    /// for their writes. Returns whether writes are queued, left while no ring was due: the
    /// caller then rings for them.
    pub fn end_posted_streak(&self) -> bool {
        self.posted_taker.lower() && !self.posted.is_empty()
    }

    /// Whether posted writes are waiting to be taken.
    pub fn has_posted(&self) -> bool {
        !self.posted.is_empty()
    }

    fn mailbox(&self, vcpu: u32) -> Result<&Mailbox> {
        self.mailboxes.get(vcpu as usize).ok_or(Error::NoSuchVcpu {
            index: vcpu,
            count: self.mailboxes.len() as u32,
        })
    }
}

fn reply_error(vcpu: u32, e: ReplyError) -> Error {
    match e {
        ReplyError::NotWaiting => Error::NotWaiting { vcpu },
        ReplyError::TooLong(len) => Error::ReplyTooLong { len },
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::exit::Outcome;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    /// Counts the access rings, and the posted ones apart.
    #[derive(Default)]
    struct Doorbells(AtomicU32, AtomicU32);

    impl ExitHandler for Doorbells {
        fn on_access(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn on_posted(&self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
        fn on_output(&self, _: u32) {}
        fn on_paused(&self) {}
        fn on_end(&self, _: &Outcome) {}
    }

    /// Runs `accesses` reads on vCPU `vcpu` of `h` in a thread; returns the bytes each got.
    fn vcpu(
        h: &Arc<Handoff>,
        bells: &Arc<Doorbells>,
        vcpu: u32,
        accesses: u64,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        let (h, bells) = (Arc::clone(h), Arc::clone(bells));
        std::thread::spawn(move || {
            (0..accesses)
                .map(|i| {
                    let mut a = DeviceAccess::port_read(0x60 + i);
                    h.exchange(vcpu, &mut a, bells.as_ref(), |_, answer| match answer {
                        Answer::Replied(b) => b[0],
                        _ => 0xee,
                    })
                })
                .collect()
        })
    }

    #[test]
    fn a_doorbell_announces_an_access_that_a_poll_then_takes() {
        let h = Arc::new(Handoff::new(1, Duration::ZERO));
        let bells = Arc::new(Doorbells::default());
        let t = vcpu(&h, &bells, 0, 1);
        // Nobody polls until the bell rings (a poll in progress would take the access
        // without one).
        while bells.0.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let mut seen = None;
        assert!(h.poll(Duration::ZERO, |v, a| seen = Some((v, a.addr))));
        assert_eq!(seen, Some((0, 0x60)));
        h.reply(0, &[7]).unwrap();
        assert_eq!(t.join().unwrap(), [7]);
        assert_eq!(bells.0.load(Ordering::SeqCst), 1);
        assert_eq!(h.reply(0, &[7]).unwrap_err().code(), "NOT_WAITING");
    }

    #[test]
    fn reply_and_poll_answers_a_streak_one_call_per_access() {
        let h = Arc::new(Handoff::new(1, Duration::from_millis(100)));
        let bells = Arc::new(Doorbells::default());
        let t = vcpu(&h, &bells, 0, 3);
        let mut next = None;
        while !h.poll(Duration::ZERO, |v, a| next = Some((v, a.addr))) {
            std::thread::yield_now();
        }
        let mut answered = Vec::new();
        while let Some((v, addr)) = next.take() {
            answered.push(addr);
            let byte = (addr & 0xff) as u8;
            h.reply_and_poll(v, &[byte], Duration::from_millis(50), |v, a| {
                next = Some((v, a.addr));
            })
            .unwrap();
        }
        assert_eq!(answered, [0x60, 0x61, 0x62]);
        assert_eq!(t.join().unwrap(), [0x60, 0x61, 0x62]);
    }

    #[test]
    fn writes_posted_during_a_take_streak_ring_no_doorbell_until_it_ends() {
        let h = Handoff::new(1, Duration::ZERO);
        let bells = Doorbells::default();
        let rings = || bells.1.load(Ordering::SeqCst);
        let values =
            |out: &mut Vec<PostedWrite>| out.drain(..).map(|w| w.value).collect::<Vec<_>>();
        let mut out = Vec::new();
        assert!(h.post_write(posted::port_write(0, 1), &bells));
        assert_eq!(rings(), 1, "nobody takes writes: the first one rings");
        h.take_posted_streak(Duration::ZERO, &mut out);
        assert_eq!(values(&mut out), [1]);
        // The streak goes on: the next writes are left to it.
        assert!(h.post_write(posted::port_write(0, 2), &bells));
        h.take_posted_streak(Duration::from_secs(1), &mut out);
        assert_eq!(values(&mut out), [2]);
        assert!(h.post_write(posted::port_write(0, 3), &bells));
        assert_eq!(rings(), 1);
        // It ends with a write queued: reported, for the caller to ring.
        assert!(h.end_posted_streak());
        h.take_posted(&mut out);
        assert_eq!(values(&mut out), [3]);
        assert!(!h.end_posted_streak(), "ended already");
        assert!(h.post_write(posted::port_write(0, 4), &bells));
        assert_eq!(rings(), 2, "no streak: a write rings again");
        // A take that finds nothing within its spin ends the streak itself.
        h.take_posted(&mut out);
        assert_eq!(values(&mut out), [4]);
        h.take_posted_streak(Duration::from_micros(100), &mut out);
        assert!(out.is_empty() && !h.end_posted_streak());
    }

    #[test]
    fn a_cancel_releases_a_waiting_vcpu_and_later_answers_are_refused() {
        let h = Arc::new(Handoff::new(2, Duration::ZERO));
        let bells = Arc::new(Doorbells::default());
        let t = vcpu(&h, &bells, 1, 1);
        while bells.0.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        h.cancel();
        assert_eq!(t.join().unwrap(), [0xee]);
        assert_eq!(h.reply(1, &[]).unwrap_err().code(), "NOT_WAITING");
        assert_eq!(h.fail(2, String::new()).unwrap_err().code(), "NO_SUCH_VCPU");
    }
}

/// Model checks of the doorbells and the cancel (see the mailbox's for the waits themselves):
/// every interleaving, up to `LOOM_MAX_PREEMPTIONS` preemptions.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::exit::Outcome;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicU32, AtomicU64};
    use loom::thread::{self, Thread};

    /// Doorbells that count their rings and wake the answering thread, as the binding's
    /// wake its JS thread. (Only the vCPU writes the count: loom 0.7 may let a later read
    /// miss a store that races with another thread's read-modify-write, tokio-rs/loom#254,
    /// so a flag the answerer clears would fail the model spuriously.)
    struct Doorbells {
        rings: AtomicU32,
        /// The address of the access the vCPU is posting, and of the last one it rang for.
        posting: AtomicU64,
        rung_for: AtomicU64,
        answerer: Thread,
    }

    impl Doorbells {
        /// Doorbells that wake the calling thread.
        fn here() -> Self {
            Doorbells {
                rings: AtomicU32::new(0),
                posting: AtomicU64::new(0),
                rung_for: AtomicU64::new(0),
                answerer: thread::current(),
            }
        }

        /// Records what the vCPU rang for (what it is posting).
        fn rang(&self) {
            let posting = self.posting.load(Ordering::Relaxed);
            self.rung_for.store(posting, Ordering::Release);
        }
    }

    impl ExitHandler for Doorbells {
        fn on_access(&self) {
            self.rang();
            self.rings.fetch_add(1, Ordering::Release);
            self.answerer.unpark();
        }
        fn on_posted(&self) {
            self.rang();
            self.answerer.unpark();
        }
        fn on_output(&self, _: u32) {}
        fn on_paused(&self) {}
        fn on_end(&self, _: &Outcome) {}
    }

    /// The answering side of a machine of one vCPU: the hand-off, its doorbells and the
    /// rings heard so far.
    struct Answerer {
        h: Arc<Handoff>,
        bells: Arc<Doorbells>,
        heard: u32,
        /// Polls as one of a streak (`poll_streak`).
        streak: bool,
    }

    impl Answerer {
        /// Takes the next access as the binding does: polls, and sleeps until the next ring
        /// when the poll finds nothing. Returns its address.
        fn next_access(&mut self) -> u64 {
            let mut seen = None;
            let mut poll = || {
                let take = |_, a: &DeviceAccess| seen = Some(a.addr);
                if self.streak {
                    self.h.poll_streak(Duration::ZERO, take)
                } else {
                    self.h.poll(Duration::ZERO, take)
                }
            };
            while !poll() {
                loop {
                    let rings = self.bells.rings.load(Ordering::Acquire);
                    if rings != self.heard {
                        self.heard = rings;
                        break;
                    }
                    thread::park();
                }
            }
            seen.unwrap_or_default()
        }

        /// Answers the second of two accesses (with 2, the first got 1); their addresses.
        fn answer_second(&self, first: u64, second: u64) -> [u64; 2] {
            self.h.reply(0, &[2]).unwrap();
            [first, second]
        }
    }

    /// Runs a machine of one vCPU that reads `addrs` one after the other, answered by
    /// `answer` on a thread of its own (the vCPU's doorbells wake it). Returns what `answer`
    /// returned, the bytes the vCPU got (0xee for an access left unanswered) and the
    /// hand-off, once both threads are done. (The model thread only joins: loom 0.7 aborts
    /// when a thread blocked in a join is unparked, tokio-rs/loom#249, and a doorbell may
    /// ring late, for an access a poll took already.)
    fn run<R: Send + 'static>(
        addrs: &'static [u64],
        answer: impl FnOnce(&mut Answerer) -> R + Send + 'static,
    ) -> (R, Vec<u8>, Arc<Handoff>) {
        let js = thread::spawn(move || {
            let h = Arc::new(Handoff::new(1, Duration::ZERO));
            let bells = Arc::new(Doorbells::here());
            let (vh, vbells) = (Arc::clone(&h), Arc::clone(&bells));
            let vcpu = thread::spawn(move || {
                let mut a = DeviceAccess::port_read(0);
                addrs
                    .iter()
                    .map(|&addr| {
                        a.addr = addr;
                        vbells.posting.store(addr, Ordering::Relaxed);
                        vh.exchange(0, &mut a, vbells.as_ref(), |_, answer| match answer {
                            Answer::Replied(b) => b[0],
                            _ => 0xee,
                        })
                    })
                    .collect::<Vec<u8>>()
            });
            let mut js = Answerer {
                h,
                bells,
                heard: 0,
                streak: false,
            };
            (answer(&mut js), vcpu, js.h)
        });
        let (result, vcpu, h) = js.join().expect("the answering thread panicked");
        (result, vcpu.join().expect("the vCPU thread panicked"), h)
    }

    #[test]
    fn an_access_is_rung_for_or_found_by_the_poll_it_races() {
        loom::model(|| {
            let (addr, got, _) = run(&[0x60], |js| {
                let addr = js.next_access();
                js.h.reply(0, &[7]).unwrap();
                addr
            });
            assert_eq!((addr, got), (0x60, vec![7]));
        });
    }

    #[test]
    fn a_streak_is_answered_with_reply_and_poll() {
        loom::model(|| {
            let (addrs, got, _) = run(&[0x60, 0x61], |js| {
                let first = js.next_access();
                let mut next = None;
                let found =
                    js.h.reply_and_poll(0, &[1], Duration::ZERO, |_, a| next = Some(a.addr))
                        .unwrap();
                let second = if found {
                    next.unwrap_or_default()
                } else {
                    js.next_access()
                };
                js.answer_second(first, second)
            });
            assert_eq!((addrs, got), ([0x60, 0x61], vec![1, 2]));
        });
    }

    #[test]
    fn an_access_posted_while_a_streak_ends_is_rung_for_or_reported() {
        loom::model(|| {
            let (addrs, got, _) = run(&[0x60, 0x61], |js| {
                // A poll of a streak that finds an access leaves the vCPU not ringing...
                js.streak = true;
                let first = js.next_access();
                js.h.reply(0, &[1]).unwrap();
                // ...until the streak ends without another poll (a handler answered with a
                // Promise, say): the next access is either reported here, for the caller to
                // ring, or the vCPU rings for it. A lost one deadlocks the model.
                if !js.h.end_streak() {
                    while js.bells.rung_for.load(Ordering::Acquire) != 0x61 {
                        thread::park();
                    }
                }
                let second = js.next_access();
                js.answer_second(first, second)
            });
            assert_eq!((addrs, got), ([0x60, 0x61], vec![1, 2]));
        });
    }

    #[test]
    fn a_write_posted_while_a_take_streak_ends_is_rung_for_or_reported() {
        loom::model(|| {
            let js = thread::spawn(|| {
                let h = Arc::new(Handoff::new(1, Duration::ZERO));
                let bells = Arc::new(Doorbells::here());
                let (vh, vbells) = (Arc::clone(&h), Arc::clone(&bells));
                let vcpu = thread::spawn(move || {
                    for value in [1, 2] {
                        vbells.posting.store(value, Ordering::Relaxed);
                        assert!(vh.post_write(posted::port_write(0, value), vbells.as_ref()));
                    }
                });
                let wait_for_ring = |value| {
                    while bells.rung_for.load(Ordering::Acquire) != value {
                        thread::park();
                    }
                };
                let mut got = Vec::new();
                // A take of a streak that finds writes leaves the vCPU not ringing...
                while got.is_empty() {
                    h.take_posted_streak(Duration::ZERO, &mut got);
                    if got.is_empty() {
                        wait_for_ring(1);
                    }
                }
                // ...until the streak ends without another take (a handler answered with
                // a Promise, say): a later write is either reported here, for the caller
                // to ring, or the vCPU rings for it. A lost one deadlocks the model.
                if got.len() < 2 && !h.end_posted_streak() {
                    wait_for_ring(2);
                }
                h.take_posted(&mut got);
                (got, vcpu)
            });
            let (got, vcpu) = js.join().unwrap();
            vcpu.join().unwrap();
            assert_eq!(got.iter().map(|w| w.value).collect::<Vec<_>>(), [1, 2]);
        });
    }

    #[test]
    fn a_cancel_releases_the_waiting_vcpu_whatever_the_answer_does() {
        loom::model(|| {
            let (replied, got, h) = run(&[0x60], |js| {
                let canceller = {
                    let h = Arc::clone(&js.h);
                    thread::spawn(move || h.cancel())
                };
                // Replies if it finds the access before the cancel.
                let replied = js.h.poll(Duration::ZERO, |_, _| {}) && js.h.reply(0, &[7]).is_ok();
                (replied, canceller)
            });
            let (replied, canceller) = replied;
            canceller.join().unwrap();
            assert!(got == [7] || got == [0xee], "{got:?}");
            assert!(replied || got == [0xee], "an answer came from nowhere");
            assert_eq!(h.reply(0, &[7]).unwrap_err().code(), "NOT_WAITING");
        });
    }
}
