//! What the KVM integration tests share: opening KVM, and following a run through an
//! [`ExitHandler`] that forwards everything to a channel.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvmkit_core::exit::{DeviceAccess, Outcome};
use kvmkit_core::kvm::KvmHost;
use kvmkit_core::machine::{ExitHandler, Machine};

/// What the handler saw.
pub enum Event {
    /// A device access on a vCPU (only tests/machine.rs reads them).
    #[allow(dead_code)]
    Access(u32, DeviceAccess),
    Posted,
    Paused,
    End(Outcome),
}

/// Forwards every event to its sender.
pub struct Channel(pub Mutex<Sender<Event>>);

impl ExitHandler for Channel {
    fn on_access(&self, vcpu: u32, access: &DeviceAccess) {
        let _ = self
            .0
            .lock()
            .unwrap()
            .send(Event::Access(vcpu, access.clone()));
    }
    fn on_posted(&self) {
        let _ = self.0.lock().unwrap().send(Event::Posted);
    }
    fn on_output(&self, _device: u32) {}
    fn on_paused(&self) {
        let _ = self.0.lock().unwrap().send(Event::Paused);
    }
    fn on_end(&self, outcome: &Outcome) {
        let _ = self.0.lock().unwrap().send(Event::End(outcome.clone()));
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
    m.start(Arc::new(Channel(Mutex::new(tx)))).unwrap();
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
