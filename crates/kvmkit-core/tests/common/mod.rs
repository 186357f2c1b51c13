//! What the KVM integration tests share: opening KVM, and following a run through an
//! [`ExitHandler`] that forwards everything to a channel.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvmkit_core::exit::{DeviceAccess, Outcome};
use kvmkit_core::handoff::Handoff;
use kvmkit_core::kvm::KvmHost;
use kvmkit_core::vm::{ExitHandler, Machine};

/// What the handler saw.
pub enum Event {
    /// A device access on a vCPU, taken from the hand-off when its doorbell rang.
    #[allow(dead_code)]
    Access(u32, DeviceAccess),
    /// An access doorbell, for a channel that leaves accesses to a poller.
    #[allow(dead_code)]
    Doorbell,
    Posted,
    Paused,
    End(Outcome),
}

/// Forwards every event to its sender.
pub struct Channel {
    tx: Mutex<Sender<Event>>,
    /// Where accesses are taken from when their doorbell rings.
    handoff: Option<Arc<Handoff>>,
}

impl Channel {
    /// Forwards each access announced on `m`, taken from its hand-off.
    pub fn taking(tx: Sender<Event>, m: &Machine) -> Arc<Self> {
        Arc::new(Channel {
            tx: Mutex::new(tx),
            handoff: Some(Arc::clone(m.handoff())),
        })
    }

    /// Forwards access doorbells as they are, leaving the accesses to a poller.
    #[allow(dead_code)]
    pub fn ringing(tx: Sender<Event>) -> Arc<Self> {
        Arc::new(Channel {
            tx: Mutex::new(tx),
            handoff: None,
        })
    }

    fn send(&self, event: Event) {
        let _ = self.tx.lock().unwrap().send(event);
    }
}

impl ExitHandler for Channel {
    fn on_access(&self) {
        match &self.handoff {
            Some(h) => {
                h.poll(Duration::ZERO, |vcpu, a| {
                    self.send(Event::Access(vcpu, a.clone()))
                });
            }
            None => self.send(Event::Doorbell),
        }
    }
    fn on_posted(&self) {
        self.send(Event::Posted);
    }
    fn on_output(&self, _device: u32) {}
    fn on_paused(&self) {
        self.send(Event::Paused);
    }
    fn on_end(&self, outcome: &Outcome) {
        self.send(Event::End(outcome.clone()));
    }
}

/// Opens KVM. Without it these tests fail in CI (`CI` set) and are skipped elsewhere, saying why.
pub fn host() -> Option<KvmHost> {
    match KvmHost::open() {
        Ok(host) => Some(host),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping: this test needs KVM: {e}");
            None
        }
        Err(e) => panic!("KVM is required in CI: {e}"),
    }
}

/// Starts `m`, returning where its events arrive.
pub fn start(m: &Machine) -> Receiver<Event> {
    let (tx, rx) = channel();
    m.start(Channel::taking(tx, m)).unwrap();
    rx
}

/// The next event, failing if none comes for 20 s.
pub fn next(rx: &Receiver<Event>) -> Event {
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the guest went quiet")
}

/// Waits for the run to end.
pub fn end(rx: &Receiver<Event>) -> Outcome {
    loop {
        if let Event::End(o) = next(rx) {
            return o;
        }
    }
}
