//! The vCPU threads' seccomp sandbox on the host's real KVM: a guest runs to its end under
//! it, while a system call the filter does not allow, made on the vCPU thread, fails or
//! kills the process as configured.
//!
//! Code runs on a vCPU thread through [`ExitHandler::on_access`], which kvmkit calls there;
//! the probe below opens a file from it, as a compromised device model might.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

#[allow(dead_code)] // This test uses only `host` of what the KVM tests share.
mod common;

use std::os::unix::process::ExitStatusExt;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvmkit_core::bus::{Route, Space};
use kvmkit_core::config::{MachineConfig, MemoryRegionConfig};
use kvmkit_core::devices::DeviceSpec;
use kvmkit_core::exit::Outcome;
use kvmkit_core::sandbox::{Sandbox, Violation};
use kvmkit_core::vm::{ExitHandler, Machine, MachineOptions};
use kvmkit_core::x86::mode::CpuMode;

const ENTRY: u64 = 0x1000;
const PROBED_FILE: &str = "/proc/self/status";
/// What the probe prints (to stderr, which the filter allows) before it opens the file.
const PROBING: &str = "probe: opening a file from the vCPU thread";

/// What the probe saw on the vCPU thread.
enum Seen {
    /// The thread's name, and how opening a file went (the OS error, if it failed).
    Access(Option<String>, Option<i32>),
    End(Outcome),
}

/// Opens a file from the vCPU thread on each access, then lets the test answer it.
struct Probe(Mutex<Sender<Seen>>);

impl ExitHandler for Probe {
    fn on_access(&self) {
        eprintln!("{PROBING}");
        let opened = std::fs::File::open(PROBED_FILE)
            .err()
            .and_then(|e| e.raw_os_error());
        let name = std::thread::current().name().map(String::from);
        let _ = self.0.lock().unwrap().send(Seen::Access(name, opened));
    }
    fn on_posted(&self) {}
    fn on_output(&self, _device: u32) {}
    fn on_paused(&self) {}
    fn on_end(&self, outcome: &Outcome) {
        let _ = self.0.lock().unwrap().send(Seen::End(outcome.clone()));
    }
}

/// A one-vCPU machine with `sandbox`, or `None` when KVM is unavailable outside CI.
fn machine(sandbox: Option<Sandbox>) -> Option<Machine> {
    let host = common::host()?;
    let config = MachineConfig {
        memory: vec![MemoryRegionConfig {
            guest_addr: 0,
            size: 1 << 20,
        }],
        vcpus: 1,
    };
    let options = MachineOptions {
        sandbox,
        ..Default::default()
    };
    Some(Machine::new(host, &config, options).unwrap())
}

/// A machine whose guest reads port 0x80 (a user device), writes the value to the debug
/// console and halts; started with `sandbox`.
fn started(sandbox: Option<Sandbox>) -> Option<(Machine, Receiver<Seen>)> {
    // in al,0x80 ; out 0xe9,al ; hlt
    let code = [0xe4, 0x80, 0xe6, 0xe9, 0xf4];
    let m = machine(sandbox)?;
    m.ram().write(ENTRY, &code).unwrap();
    m.with_vcpu(0, |v| v.setup(m.ram(), CpuMode::Real, ENTRY, 0x8000))
        .unwrap();
    let route = Route::User {
        device: 1,
        posted: false,
    };
    m.add_device(Space::Port, 0x80, 1, "probe", route).unwrap();
    let (tx, rx) = channel();
    m.start(Arc::new(Probe(Mutex::new(tx)))).unwrap();
    Some((m, rx))
}

fn next(rx: &Receiver<Seen>) -> Seen {
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the guest went quiet")
}

/// Runs the guest to its end, answering its read with 0x2a; returns how the vCPU thread's
/// open went and what the guest wrote.
fn run(sandbox: Option<Sandbox>) -> Option<(Option<i32>, Vec<u8>)> {
    let (m, rx) = started(sandbox)?;
    let console = m
        .add(DeviceSpec::DebugConsole { port: 0xe9 })
        .unwrap()
        .into_console()
        .unwrap();
    let Seen::Access(name, opened) = next(&rx) else {
        panic!("expected the guest's read first");
    };
    assert_eq!(name.as_deref(), Some("kvmkit-vcpu0"));
    m.handoff().reply(0, &[0x2a]).unwrap();
    let Seen::End(outcome) = next(&rx) else {
        panic!("expected the end");
    };
    assert_eq!(outcome, Outcome::Halted);
    let written = console.lock().unwrap().take();
    Some((opened, written))
}

#[test]
fn a_sandboxed_vcpu_runs_its_guest_while_a_forbidden_call_fails() {
    let fail = Sandbox {
        violation: Violation::Fail,
    };
    let Some((opened, written)) = run(Some(fail)) else {
        return;
    };
    assert_eq!(
        opened,
        Some(libc::EPERM),
        "openat is not a vCPU thread's business"
    );
    assert_eq!(
        written,
        [0x2a],
        "the guest ran to its end: KVM ioctls are allowed"
    );
    // Only the vCPU thread is confined.
    assert!(std::fs::File::open(PROBED_FILE).is_ok());
}

#[test]
fn without_the_sandbox_the_same_call_succeeds() {
    let Some((opened, written)) = run(None) else {
        return;
    };
    assert_eq!(opened, None);
    assert_eq!(written, [0x2a]);
}

#[test]
fn a_sandboxed_machine_cannot_start_inline() {
    let fail = Sandbox {
        violation: Violation::Fail,
    };
    let Some(m) = machine(Some(fail)) else {
        return;
    };
    let (tx, _rx) = channel();
    let err = m.start_inline(Arc::new(Probe(Mutex::new(tx)))).unwrap_err();
    assert_eq!(err.code(), "INVALID_CONFIG");
    assert!(err.to_string().contains("inline"), "{err}");
}

/// Set in the child process `a_forbidden_call_kills_the_process_when_so_configured` starts.
const CHILD: &str = "KVMKIT_SANDBOX_KILL_CHILD";

/// In the child only: a vCPU thread under the kill action makes a forbidden call.
#[test]
fn kill_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let kill = Sandbox {
        violation: Violation::KillProcess,
    };
    let Some((_m, rx)) = started(Some(kill)) else {
        return;
    };
    // The process dies in the probe's open; nothing more arrives.
    let _ = next(&rx);
    std::process::exit(0);
}

#[test]
fn a_forbidden_call_kills_the_process_when_so_configured() {
    if common::host().is_none() {
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&child.stderr);
    // The guest ran up to its access, and the probe's open was what killed the process.
    assert!(stderr.contains(PROBING), "{stderr}");
    assert_eq!(child.status.signal(), Some(libc::SIGSYS), "{stderr}");
}
