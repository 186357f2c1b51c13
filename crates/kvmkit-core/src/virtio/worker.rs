//! The machine's I/O thread: one `event-manager` loop that waits on every virtio device's
//! queue eventfds (signalled by KVM when the guest writes `QueueNotify`; not those of queues
//! the kernel's vhost serves) and backend file descriptors, and calls the device. Nothing here runs on a vCPU thread or on Node's event
//! loop. A device that panics is marked `DEVICE_NEEDS_RESET` and stopped; the others go on.

use std::os::fd::RawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, RemoteEndpoint};
use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, Result};
use crate::sync::LockExt;
use crate::virtio::Interrupt;
use crate::virtio::mmio::Slot;

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Event data of backend descriptors starts here; below it is a queue index.
const BACKEND_BASE: u32 = 1 << 16;

/// The I/O thread. Dropping it stops and joins the thread.
pub struct IoThread {
    endpoint: RemoteEndpoint<Subscriber>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for IoThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoThread").finish_non_exhaustive()
    }
}

impl IoThread {
    /// Starts the thread (named `kvmkit-io`).
    ///
    /// # Errors
    ///
    /// `THREAD_FAILED` if the thread or its epoll instance cannot be created.
    pub fn spawn() -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("kvmkit-io".into())
            .spawn(move || {
                let mut manager = match EventManager::<Subscriber>::new() {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(manager.remote_endpoint()));
                while !stopping.load(Ordering::Acquire) {
                    if manager.run_with_timeout(-1).is_err() {
                        // EINTR and the like: go round again.
                        continue;
                    }
                }
            })
            .map_err(Error::Thread)?;
        let endpoint = rx
            .recv()
            .map_err(|_| Error::Thread(std::io::Error::other("the I/O thread ended at once")))?
            .map_err(|e| Error::Thread(std::io::Error::other(format!("epoll: {e:?}"))))?;
        Ok(IoThread {
            endpoint,
            stop,
            thread: Some(thread),
        })
    }

    /// Serves the device in `slot`: its queues are `queue_evts` (queue `i` is the `i`th),
    /// `backend` the descriptors it asked to watch.
    ///
    /// # Errors
    ///
    /// `THREAD_FAILED` if the I/O thread is gone.
    pub fn serve(
        &self,
        slot: Arc<Mutex<Slot>>,
        interrupt: Arc<Interrupt>,
        queue_evts: Vec<EventFd>,
        backend: Vec<RawFd>,
    ) -> Result<()> {
        let worker: Subscriber = Arc::new(Mutex::new(DeviceWorker {
            slot,
            interrupt,
            queue_evts,
            offloaded: Vec::new(),
            backend,
        }));
        self.endpoint
            .call_blocking(
                move |ops| -> std::result::Result<(), event_manager::Error> {
                    ops.add_subscriber(worker);
                    Ok(())
                },
            )
            .map_err(|e| Error::Thread(std::io::Error::other(format!("I/O thread: {e:?}"))))
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.endpoint.kick();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One device's subscription.
struct DeviceWorker {
    slot: Arc<Mutex<Slot>>,
    interrupt: Arc<Interrupt>,
    queue_evts: Vec<EventFd>,
    /// The queues whose eventfds a backend outside kvmkit waits on.
    offloaded: Vec<usize>,
    backend: Vec<RawFd>,
}

impl DeviceWorker {
    /// A device that stopped at its budget with chains left (on whichever queue: serving
    /// one may drain another) is called again for each queue after the other devices'
    /// events; a queue with nothing waiting costs one empty look.
    fn requeue_if_yielded(&self) {
        if self.interrupt.take_yielded() {
            for (i, evt) in self.queue_evts.iter().enumerate() {
                if !self.offloaded.contains(&i) {
                    let _ = evt.write(1);
                }
            }
        }
    }

    fn call(&self, what: &str, f: impl FnOnce(&mut Slot)) {
        let mut slot = self.slot.lock_or_recover();
        let name = slot.device.name();
        if catch_unwind(AssertUnwindSafe(|| f(&mut slot))).is_err() {
            slot.active = false;
            drop(slot);
            self.interrupt
                .fail(format!("{name}: the device model failed on {what}"));
        }
    }
}

impl MutEventSubscriber for DeviceWorker {
    fn init(&mut self, ops: &mut EventOps) {
        // A queue served outside kvmkit (vhost) is the kernel's to wait on: reading its
        // eventfd here would steal the guest's notifications.
        self.offloaded = self
            .slot
            .lock_or_recover()
            .device
            .offloaded_queues()
            .to_vec();
        for (i, evt) in self.queue_evts.iter().enumerate() {
            if !self.offloaded.contains(&i) {
                let _ = ops.add(Events::with_data(evt, i as u32, EventSet::IN));
            }
        }
        for (i, &fd) in self.backend.iter().enumerate() {
            let data = BACKEND_BASE + i as u32;
            let _ = ops.add(Events::with_data_raw(fd, data, EventSet::IN));
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let data = events.data();
        if data < BACKEND_BASE {
            let index = data as usize;
            let Some(evt) = self.queue_evts.get(index) else {
                return;
            };
            let _ = evt.read();
            self.call("a queue notification", |slot| {
                if slot.active {
                    slot.device.process_queue(index);
                }
            });
            self.requeue_if_yielded();
        } else {
            let index = (data - BACKEND_BASE) as usize;
            if events
                .event_set()
                .intersects(EventSet::ERROR | EventSet::HANG_UP)
            {
                // Level-triggered: a dead descriptor would wake the loop forever.
                let _ = ops.remove(Events::empty_raw(events.fd()));
            }
            self.call("a backend event", |slot| {
                slot.device.process_backend(index);
            });
            self.requeue_if_yielded();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::{Activation, VirtioDevice};
    use std::sync::atomic::AtomicU32;
    use std::time::{Duration, Instant};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    /// A device whose queue 0 a backend outside kvmkit serves; it counts the notifications it
    /// hears of, per queue.
    struct Offloading(Arc<[AtomicU32; 2]>);

    impl VirtioDevice for Offloading {
        fn device_type(&self) -> u32 {
            0
        }
        fn name(&self) -> &'static str {
            "offloading"
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 16]
        }
        fn features(&self) -> u64 {
            0
        }
        fn read_config(&self, _offset: u64, _data: &mut [u8]) {}
        fn activate(&mut self, _activation: Activation) -> std::result::Result<(), String> {
            Ok(())
        }
        fn process_queue(&mut self, index: usize) {
            self.0[index].fetch_add(1, Ordering::SeqCst);
        }
        fn offloaded_queues(&self) -> &[usize] {
            &[0]
        }
        fn reset(&mut self) {}
    }

    #[test]
    fn an_offloaded_queue_keeps_its_notifications_for_the_backend_that_serves_it() {
        let heard = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let slot = Arc::new(Mutex::new(Slot {
            device: Box::new(Offloading(Arc::clone(&heard))),
            active: true,
        }));
        let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        let evts = [
            EventFd::new(EFD_NONBLOCK).unwrap(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        ];
        let kept: Vec<EventFd> = evts.iter().map(|e| e.try_clone().unwrap()).collect();
        let io = IoThread::spawn().unwrap();
        io.serve(slot, interrupt, evts.into(), Vec::new()).unwrap();
        kept[0].write(1).unwrap();
        kept[1].write(1).unwrap();
        let start = Instant::now();
        while heard[1].load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            heard[1].load(Ordering::SeqCst),
            1,
            "queue 1 is the I/O thread's"
        );
        assert_eq!(heard[0].load(Ordering::SeqCst), 0, "queue 0 is not");
        // Its notification is still there for the kernel to take.
        assert_eq!(kept[0].read().unwrap(), 1);
        assert!(kept[1].read().is_err(), "the I/O thread consumed queue 1's");
    }
}
