//! Posted writes: accesses to devices that declared their writes need no answer.
//!
//! The vCPU queues the write and re-enters the guest at once. The queue notifies its
//! consumer only when it goes from empty to non-empty, so a burst of writes costs one
//! wake-up, and the consumer drains everything queued at each notification. The queue is
//! bounded: a vCPU that finds it full waits for the consumer (backpressure), so a guest
//! cannot make the host buffer without limit.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

use crate::exit::ExitKind;
use crate::sync::{CondvarExt, LockExt};

/// Most writes queued before vCPUs wait for the consumer.
pub const CAPACITY: usize = 4096;

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
}

impl Default for PostedQueue {
    fn default() -> Self {
        PostedQueue {
            queue: Mutex::new(VecDeque::with_capacity(CAPACITY)),
            drained: Condvar::new(),
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
            q = self
                .drained
                .wait_timeout_or_recover(q, std::time::Duration::from_millis(10));
        }
        let was_empty = q.is_empty();
        q.push_back(write);
        Some(was_empty)
    }

    /// Whether no write is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.lock_or_recover().is_empty()
    }

    /// Moves every queued write into `out`, oldest first.
    pub fn drain_into(&self, out: &mut Vec<PostedWrite>) {
        let mut q = self.queue.lock_or_recover();
        out.extend(q.drain(..));
        drop(q);
        self.drained.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn write(value: u64) -> PostedWrite {
        PostedWrite {
            vcpu: 0,
            device: 1,
            kind: ExitKind::IoOut,
            offset: 0,
            addr: 0x80,
            size: 1,
            value,
        }
    }

    #[test]
    fn notifies_only_on_the_first_write_of_a_batch() {
        let q = PostedQueue::default();
        assert_eq!(q.push(write(1), || false), Some(true));
        assert_eq!(q.push(write(2), || false), Some(false));
        let mut out = Vec::new();
        q.drain_into(&mut out);
        assert_eq!(out.iter().map(|w| w.value).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(q.push(write(3), || false), Some(true));
    }

    #[test]
    fn a_full_queue_makes_producers_wait_for_the_consumer() {
        let q = Arc::new(PostedQueue::default());
        for i in 0..CAPACITY as u64 {
            q.push(write(i), || false);
        }
        let producer = Arc::clone(&q);
        let t = std::thread::spawn(move || producer.push(write(9999), || false));
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(
            !t.is_finished(),
            "the producer waits while the queue is full"
        );
        let mut out = Vec::new();
        q.drain_into(&mut out);
        assert_eq!(t.join().unwrap(), Some(true));
        assert_eq!(out.len(), CAPACITY);
        assert_eq!(q.push(write(0), || true), Some(false));
    }

    #[test]
    fn a_full_queue_gives_up_when_stopping() {
        let q = PostedQueue::default();
        for i in 0..CAPACITY as u64 {
            q.push(write(i), || false);
        }
        assert_eq!(q.push(write(0), || true), None);
    }
}
