//! Posted writes: accesses to devices that declared their writes need no answer.
//!
//! The vCPU queues the write and re-enters the guest at once. The queue notifies its
//! consumer only when it goes from empty to non-empty, so a burst of writes costs one
//! wake-up, and the consumer drains everything queued at each notification. The queue is
//! bounded: a vCPU that finds it full waits for the consumer (backpressure), so a guest
//! cannot make the host buffer without limit. Its lock and condition variable come from
//! [`super::primitives`], so loom model-checks this protocol too (`loom_tests` below).

use std::collections::VecDeque;
use std::time::Duration;

use super::primitives::{AtomicBool, Condvar, CondvarExt, LockExt, Mutex, Ordering};
use crate::exit::ExitKind;

/// Most writes queued before vCPUs wait for the consumer (2 under loom, so that a model
/// fills the queue in two writes).
pub const CAPACITY: usize = if cfg!(all(test, loom)) { 2 } else { 4096 };

/// How often a vCPU waiting for room looks whether the machine stops, in case its stop
/// came without [`PostedQueue::wake`].
const STOP_CHECK: Duration = Duration::from_millis(10);

/// One posted write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostedWrite {
    /// The vCPU that wrote.
    pub vcpu: u32,
    /// The device's registration id.
    pub device: u32,
    /// [`ExitKind::IoOut`] or [`ExitKind::MmioWrite`].
    pub kind: ExitKind,
    /// Offset into the device's range.
    pub offset: u64,
    /// Absolute port or address.
    pub addr: u64,
    /// Width in bytes.
    pub size: u32,
    /// The value written (little-endian, zero-extended).
    pub value: u64,
}

/// The queue shared by the vCPUs (producers) and the consumer.
#[derive(Debug)]
pub struct PostedQueue {
    queue: Mutex<VecDeque<PostedWrite>>,
    drained: Condvar,
    /// Whether a write is queued, kept with the queue under its lock: what a waiting
    /// consumer looks at without taking the lock the producers need.
    queued: AtomicBool,
}

impl Default for PostedQueue {
    fn default() -> Self {
        PostedQueue {
            queue: Mutex::new(VecDeque::with_capacity(CAPACITY)),
            drained: Condvar::new(),
            queued: AtomicBool::new(false),
        }
    }
}

impl PostedQueue {
    /// Queues `write`, waiting while the queue is full unless `stopping()`. Returns whether
    /// the consumer must be notified (the queue was empty), or `None` if it gave up.
    pub fn push(&self, write: PostedWrite, stopping: impl Fn() -> bool) -> Option<bool> {
        let mut q = self.queue.lock_or_recover();
        while q.len() >= CAPACITY {
            if stopping() {
                return None;
            }
            q = self.drained.wait_timeout_or_recover(q, STOP_CHECK);
        }
        let was_empty = q.is_empty();
        q.push_back(write);
        self.queued.store(true, Ordering::Release);
        Some(was_empty)
    }

    /// Wakes the vCPUs waiting for room, to look at their `stopping()` again: called after
    /// the stop is raised. Taking the lock orders the stop before the check of a vCPU
    /// about to wait.
    pub fn wake(&self) {
        drop(self.queue.lock_or_recover());
        self.drained.notify_all();
    }

    /// Whether no write is queued.
    pub fn is_empty(&self) -> bool {
        !self.queued.load(Ordering::Acquire)
    }

    /// Moves every queued write into `out`, oldest first.
    pub fn drain_into(&self, out: &mut Vec<PostedWrite>) {
        let mut q = self.queue.lock_or_recover();
        out.extend(q.drain(..));
        self.queued.store(false, Ordering::Relaxed);
        drop(q);
        self.drained.notify_all();
    }
}

/// The tests' posted write: `value` written to port 0x80 by vCPU `vcpu`.
#[cfg(test)]
pub(super) fn port_write(vcpu: u32, value: u64) -> PostedWrite {
    PostedWrite {
        vcpu,
        device: 1,
        kind: ExitKind::IoOut,
        offset: 0,
        addr: 0x80,
        size: 1,
        value,
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn notifies_only_on_the_first_write_of_a_batch() {
        let q = PostedQueue::default();
        assert_eq!(q.push(port_write(0, 1), || false), Some(true));
        assert_eq!(q.push(port_write(0, 2), || false), Some(false));
        let mut out = Vec::new();
        q.drain_into(&mut out);
        assert_eq!(out.iter().map(|w| w.value).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(q.push(port_write(0, 3), || false), Some(true));
    }

    #[test]
    fn a_full_queue_makes_producers_wait_for_the_consumer() {
        let q = Arc::new(PostedQueue::default());
        for i in 0..CAPACITY as u64 {
            q.push(port_write(0, i), || false);
        }
        let producer = Arc::clone(&q);
        let t = std::thread::spawn(move || producer.push(port_write(0, 9999), || false));
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(
            !t.is_finished(),
            "the producer waits while the queue is full"
        );
        let mut out = Vec::new();
        q.drain_into(&mut out);
        assert_eq!(t.join().unwrap(), Some(true));
        assert_eq!(out.len(), CAPACITY);
        assert_eq!(q.push(port_write(0, 0), || true), Some(false));
    }

    #[test]
    fn a_full_queue_gives_up_when_stopping() {
        let q = PostedQueue::default();
        for i in 0..CAPACITY as u64 {
            q.push(port_write(0, i), || false);
        }
        assert_eq!(q.push(port_write(0, 0), || true), None);
    }
}

/// Model checks of the queue's protocol: loom runs each test under every interleaving of its
/// threads (up to `LOOM_MAX_PREEMPTIONS` preemptions), and fails one that deadlocks, and so
/// also one that loses a notification (a timed wait is a plain wait there, see
/// [`super::primitives::CondvarExt`]). The queue holds [`CAPACITY`] = 2 writes there.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use loom::thread;

    /// A queue that vCPU 0 filled with the values 0 and 1.
    fn full() -> Arc<PostedQueue> {
        let q = Arc::new(PostedQueue::default());
        for value in 0..CAPACITY as u64 {
            assert!(q.push(port_write(0, value), || false).is_some());
        }
        q
    }

    /// Drains `q`: the (vCPU, value) of each write, oldest first.
    fn drain(q: &PostedQueue) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        q.drain_into(&mut out);
        out.iter().map(|w| (w.vcpu, w.value)).collect()
    }

    #[test]
    fn a_full_queue_blocks_the_vcpus_until_the_consumer_drains_it() {
        loom::model(|| {
            let q = full();
            let vcpus = [1, 2].map(|vcpu| {
                let q = Arc::clone(&q);
                thread::spawn(move || q.push(port_write(vcpu, 10), || false))
            });
            // No write got past the bound: the first drain finds only the queue's filling.
            assert_eq!(drain(&q), [(0, 0), (0, 1)]);
            // The drain woke both vCPUs (one notification would leave one waiting forever);
            // the first to queue found the queue empty and notifies the consumer.
            let notified = vcpus.map(|t| t.join().unwrap());
            let got = drain(&q);
            assert_eq!(got.len(), 2);
            let first = match notified {
                [Some(true), Some(false)] => 1,
                [Some(false), Some(true)] => 2,
                other => panic!("one vCPU notifies, the other finds writes queued: {other:?}"),
            };
            assert_eq!(got[0], (first, 10));
        });
    }

    #[test]
    fn a_stop_releases_a_vcpu_waiting_for_room_without_queuing_its_write() {
        loom::model(|| {
            let q = full();
            let stopping = Arc::new(AtomicBool::new(false));
            let vcpu = {
                let (q, stopping) = (Arc::clone(&q), Arc::clone(&stopping));
                thread::spawn(move || {
                    q.push(port_write(1, 10), || stopping.load(Ordering::Acquire))
                })
            };
            stopping.store(true, Ordering::Release);
            // One wake after the stop releases the vCPU in every interleaving (loom's timed
            // wait ends only when notified: a lost wake-up is a deadlock here).
            q.wake();
            assert_eq!(vcpu.join().unwrap(), None);
            assert_eq!(drain(&q), [(0, 0), (0, 1)]);
        });
    }

    #[test]
    fn every_write_is_taken_after_a_notification_in_the_order_each_vcpu_queued_it() {
        loom::model(|| {
            // The consumer drains everything at each notification and sleeps in between, as
            // the binding's JS thread does; a write queued without a notification after its
            // last drain would leave it asleep. (The model thread only joins: loom 0.7 aborts
            // when a thread blocked in a join is unparked, tokio-rs/loom#249.)
            let consumer = thread::spawn(|| {
                let q = Arc::new(PostedQueue::default());
                let me = thread::current();
                // One count per vCPU, each written by its vCPU only (tokio-rs/loom#254).
                let rings = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
                let vcpus = [0, 1].map(|vcpu| {
                    let (q, rings, me) = (Arc::clone(&q), Arc::clone(&rings), me.clone());
                    thread::spawn(move || {
                        for value in 0..2 {
                            if q.push(port_write(vcpu, value), || false) == Some(true) {
                                rings[vcpu as usize].fetch_add(1, Ordering::Release);
                                me.unpark();
                            }
                        }
                    })
                });
                let (mut taken, mut heard) = (Vec::new(), 0);
                while taken.len() < 4 {
                    let rung: u32 = rings.iter().map(|r| r.load(Ordering::Acquire)).sum();
                    if rung == heard {
                        thread::park();
                    } else {
                        heard = rung;
                        taken.extend(drain(&q));
                    }
                }
                (taken, vcpus)
            });
            let (taken, vcpus) = consumer.join().unwrap();
            for t in vcpus {
                t.join().unwrap();
            }
            for vcpu in [0, 1] {
                let values: Vec<u64> = taken.iter().filter(|w| w.0 == vcpu).map(|w| w.1).collect();
                assert_eq!(values, [0, 1], "{taken:?}");
            }
        });
    }
}
