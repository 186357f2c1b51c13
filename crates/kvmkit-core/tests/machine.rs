//! Runs tiny guests on the host's real KVM.
//!
//! Each guest is a few hand-assembled instructions, spelled out beside their bytes.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvmkit_core::bus::{BusDevice, BusDeviceSync, DeviceAction, Route, Space};
use kvmkit_core::config::{MachineConfig, MemoryRegionConfig};
use kvmkit_core::devices::{DebugExit, DeviceSpec};
use kvmkit_core::exit::{ExitKind, Outcome};
use kvmkit_core::irq::{self, IoEvent};
use kvmkit_core::vm::{InlineAnswer, Machine, MachineOptions, UnhandledPolicy};

use common::{Channel, Event, end, host, next, start};
use kvmkit_core::x86::mode::CpuMode;

const ENTRY: u64 = 0x1000;

/// A one-vCPU machine with 1 MiB of RAM running `code` from 0x1000 in `mode`, or `None`
/// when KVM is unavailable outside CI.
fn machine(code: &[u8], mode: CpuMode, options: MachineOptions) -> Option<Machine> {
    let host = host()?;
    let config = MachineConfig {
        memory: vec![MemoryRegionConfig {
            guest_addr: 0,
            size: 1 << 20,
        }],
        vcpus: 1,
    };
    let m = Machine::new(host, &config, options).unwrap();
    m.ram().write(ENTRY, code).unwrap();
    m.with_vcpu(0, |v| v.setup(m.ram(), mode, ENTRY, 0x8000))
        .unwrap();
    Some(m)
}

fn user(device: u32, posted: bool) -> Route {
    Route::User { device, posted }
}

/// A machine whose guest reads port 0x3f8, adds 1, writes it back and halts; the port is
/// user device 7.
fn echo_machine() -> Option<Machine> {
    // mov dx,0x3f8 ; in al,dx ; add al,1 ; out dx,al ; hlt
    let code = [0xba, 0xf8, 0x03, 0xec, 0x04, 0x01, 0xee, 0xf4];
    let m = machine(&code, CpuMode::Real, MachineOptions::default())?;
    m.add_device(Space::Port, 0x3f8, 8, "uart", user(7, false))
        .unwrap();
    Some(m)
}

#[test]
fn built_in_debug_console_collects_output_and_hlt_ends_the_run() {
    // mov al,'H' ; out 0xe9,al ; mov al,'i' ; out 0xe9,al ; hlt
    let code = [0xb0, b'H', 0xe6, 0xe9, 0xb0, b'i', 0xe6, 0xe9, 0xf4];
    let Some(m) = machine(&code, CpuMode::Real, MachineOptions::default()) else {
        return;
    };
    let console = m
        .add(DeviceSpec::DebugConsole { port: 0xe9 })
        .unwrap()
        .into_console()
        .unwrap();
    let rx = start(&m);
    assert_eq!(end(&rx), Outcome::Halted);
    assert_eq!(console.lock().unwrap().take(), b"Hi");
    let stats = m.stats(0).unwrap();
    assert_eq!(stats.exits[ExitKind::IoOut as usize], 2);
    assert_eq!(stats.exits[ExitKind::Hlt as usize], 1);
}

#[test]
fn user_device_answers_port_reads_and_sees_writes() {
    let Some(m) = echo_machine() else {
        return;
    };
    let rx = start(&m);
    let Event::Access(0, read) = next(&rx) else {
        panic!("expected a read")
    };
    assert_eq!(
        (read.kind, read.device, read.offset, read.size),
        (ExitKind::IoIn, 7, 0, 1)
    );
    // Registers are readable while the vCPU waits for the answer.
    m.with_vcpu(0, |v| v.get_regs()).unwrap();
    m.handoff().reply(0, &[0x41]).unwrap();
    let Event::Access(0, write) = next(&rx) else {
        panic!("expected a write")
    };
    assert_eq!(
        (write.kind, write.data.as_slice()),
        (ExitKind::IoOut, &[0x42][..])
    );
    m.handoff().reply(0, &[]).unwrap();
    assert_eq!(end(&rx), Outcome::Halted);
    assert_eq!(m.handoff().reply(0, &[]).unwrap_err().code(), "NOT_WAITING");
}

#[test]
fn a_vcpu_paused_after_a_port_read_shows_the_completed_read() {
    let Some(m) = echo_machine() else {
        return;
    };
    let rx = start(&m);
    let Event::Access(0, read) = next(&rx) else {
        panic!("expected a read")
    };
    assert_eq!(read.kind, ExitKind::IoIn);
    m.pause().unwrap();
    m.handoff().reply(0, &[0x41]).unwrap();
    assert!(matches!(next(&rx), Event::Paused));
    let regs = m.with_vcpu(0, |v| v.get_regs()).unwrap();
    // `in al,dx` (at 0x1003) is complete: RIP is past it and AL holds the answer.
    assert_eq!((regs.rip, regs.rax & 0xff), (ENTRY + 4, 0x41));
    m.resume().unwrap();
    let Event::Access(0, write) = next(&rx) else {
        panic!("expected the write")
    };
    assert_eq!(write.data, [0x42]);
    m.handoff().reply(0, &[]).unwrap();
    assert_eq!(end(&rx), Outcome::Halted);
}

/// A Rust device whose reads return 0x5a once the test lets them (`go`), after saying they
/// started (`reading`).
struct Gate {
    reading: Arc<AtomicBool>,
    go: Arc<AtomicBool>,
}

impl BusDevice for Gate {
    fn read(&mut self, _: u64, data: &mut [u8]) {
        self.reading.store(true, Ordering::SeqCst);
        while !self.go.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        data.fill(0x5a);
    }
    fn write(&mut self, _: u64, _: &[u8]) -> Option<DeviceAction> {
        None
    }
}

#[test]
fn a_vcpu_paused_during_a_built_in_read_shows_the_completed_read() {
    // mov dx,0x70 ; in al,dx ; hlt
    let code = [0xba, 0x70, 0x00, 0xec, 0xf4];
    let Some(m) = machine(&code, CpuMode::Real, MachineOptions::default()) else {
        return;
    };
    let (reading, go) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let gate = Gate {
        reading: Arc::clone(&reading),
        go: Arc::clone(&go),
    };
    let route = Route::BuiltIn(Arc::new(Mutex::new(gate)));
    m.add_device(Space::Port, 0x70, 1, "gate", route).unwrap();
    let rx = start(&m);
    while !reading.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    m.pause().unwrap();
    go.store(true, Ordering::SeqCst);
    assert!(matches!(next(&rx), Event::Paused));
    let regs = m.with_vcpu(0, |v| v.get_regs()).unwrap();
    // `in al,dx` (at 0x1003) is complete: RIP is past it and AL holds what it read.
    assert_eq!((regs.rip, regs.rax & 0xff), (ENTRY + 4, 0x5a));
    m.resume().unwrap();
    assert_eq!(end(&rx), Outcome::Halted);
}

#[test]
fn string_io_reaches_devices_with_its_count() {
    // mov si,0x1100 ; mov cx,3 ; mov dx,0x500 ; rep outsb ; hlt
    let mut code = vec![
        0xbe, 0x00, 0x11, 0xb9, 0x03, 0x00, 0xba, 0x00, 0x05, 0xf3, 0x6e, 0xf4,
    ];
    code.resize(0x100, 0);
    code.extend_from_slice(b"abc");
    let Some(m) = machine(&code, CpuMode::Real, MachineOptions::default()) else {
        return;
    };
    m.add_device(Space::Port, 0x500, 1, "sink", user(1, false))
        .unwrap();
    let rx = start(&m);
    let mut seen = Vec::new();
    loop {
        match next(&rx) {
            Event::Access(_, a) => {
                assert_eq!(a.count as usize, a.data.len());
                seen.extend_from_slice(&a.data);
                m.handoff().reply(0, &[]).unwrap();
            }
            Event::End(o) => {
                assert_eq!(o, Outcome::Halted);
                break;
            }
            Event::Paused | Event::Posted | Event::Doorbell => unreachable!(),
        }
    }
    assert_eq!(seen, b"abc");
}

#[test]
fn unclaimed_port_stops_with_an_error_naming_port_and_rip() {
    // mov al,0x55 ; out 0x80,al ; hlt
    let code = [0xb0, 0x55, 0xe6, 0x80, 0xf4];
    let Some(m) = machine(&code, CpuMode::Real, MachineOptions::default()) else {
        return;
    };
    let rx = start(&m);
    let Outcome::Error(e) = end(&rx) else {
        panic!("expected an error")
    };
    assert_eq!(e.code, "UNHANDLED_EXIT");
    assert_eq!(e.exit, ExitKind::IoOut);
    assert!(e.message.contains("port 0x80"), "{}", e.message);
    assert!(e.message.contains("write of 0x55"), "{}", e.message);
    assert_eq!(e.registers.unwrap().rip, ENTRY + 4);
    assert_eq!(e.instruction[0], 0xf4, "the bytes at RIP are the hlt");
}

#[test]
fn ignore_policy_reads_all_ones() {
    // in al,0x80 ; out 0xe9,al ; hlt
    let code = [0xe4, 0x80, 0xe6, 0xe9, 0xf4];
    let options = MachineOptions {
        unhandled: UnhandledPolicy::Ignore,
        ..Default::default()
    };
    let Some(m) = machine(&code, CpuMode::Real, options) else {
        return;
    };
    let console = m
        .add(DeviceSpec::DebugConsole { port: 0xe9 })
        .unwrap()
        .into_console()
        .unwrap();
    assert_eq!(end(&start(&m)), Outcome::Halted);
    assert_eq!(console.lock().unwrap().take(), [0xff]);
}

/// A long-mode guest's write, then read, of an MMIO device at 0xd0000000:
/// mov rax,0xd0000000 ; mov dword [rax],0x12345678 ; mov ebx,[rax+4]
const MMIO_WRITE_THEN_READ: [u8; 19] = [
    0x48, 0xb8, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x00, 0x00, 0x00, // mov rax, imm64
    0xc7, 0x00, 0x78, 0x56, 0x34, 0x12, // mov dword [rax], imm32
    0x8b, 0x58, 0x04, // mov ebx, [rax+4]
];

#[test]
fn long_mode_guest_reaches_an_mmio_device_above_ram() {
    // ... ; mov [rax+8],ebx ; hlt
    let code = [&MMIO_WRITE_THEN_READ[..], &[0x89, 0x58, 0x08, 0xf4]].concat();
    let Some(m) = machine(&code, CpuMode::Long, MachineOptions::default()) else {
        return;
    };
    m.add_device(Space::Mmio, 0xd000_0000, 0x1000, "regs", user(3, false))
        .unwrap();
    let rx = start(&m);
    let Event::Access(_, w) = next(&rx) else {
        panic!()
    };
    assert_eq!(
        (w.kind, w.offset, w.data.as_slice()),
        (ExitKind::MmioWrite, 0, &[0x78, 0x56, 0x34, 0x12][..])
    );
    m.handoff().reply(0, &[]).unwrap();
    let Event::Access(_, r) = next(&rx) else {
        panic!()
    };
    assert_eq!((r.kind, r.offset, r.size), (ExitKind::MmioRead, 4, 4));
    m.handoff().reply(0, &[0xef, 0xbe, 0xad, 0xde]).unwrap();
    let Event::Access(_, w) = next(&rx) else {
        panic!()
    };
    assert_eq!(
        (w.offset, w.data.as_slice()),
        (8, &[0xef, 0xbe, 0xad, 0xde][..])
    );
    m.handoff().reply(0, &[]).unwrap();
    assert_eq!(end(&rx), Outcome::Halted);
}

/// A built-in without a lock: keeps the last dword written, and answers a read in its
/// first byte only.
#[derive(Default)]
struct Latch(AtomicU32);

impl BusDeviceSync for Latch {
    fn read(&self, _: u64, data: &mut [u8]) {
        data[0] = 0x5a;
    }
    fn write(&self, _: u64, data: &[u8]) -> Option<DeviceAction> {
        self.0.store(
            u32::from_le_bytes(data.try_into().unwrap()),
            Ordering::SeqCst,
        );
        None
    }
}

#[test]
fn a_built_in_mmio_device_answers_in_place_and_unwritten_bytes_read_as_zero() {
    // ... ; hlt
    let code = [&MMIO_WRITE_THEN_READ[..], &[0xf4]].concat();
    let Some(m) = machine(&code, CpuMode::Long, MachineOptions::default()) else {
        return;
    };
    let latch = Arc::new(Latch::default());
    let route = Route::BuiltIn(Arc::clone(&latch) as Arc<dyn BusDeviceSync>);
    m.add_device(Space::Mmio, 0xd000_0000, 0x1000, "latch", route)
        .unwrap();
    assert_eq!(end(&start(&m)), Outcome::Halted);
    assert_eq!(latch.0.load(Ordering::SeqCst), 0x1234_5678);
    // The read's last three bytes are zero, not the write's bytes still in kvm_run.
    let regs = m.with_vcpu(0, |v| v.get_regs()).unwrap();
    assert_eq!(regs.rbx & 0xffff_ffff, 0x5a);
}

#[test]
fn mmio_devices_over_ram_are_refused() {
    let Some(m) = machine(&[0xf4], CpuMode::Real, MachineOptions::default()) else {
        return;
    };
    let err = m
        .add_device(Space::Mmio, 0x1000, 0x1000, "x", user(1, false))
        .unwrap_err();
    assert_eq!(err.code(), "BUS_RANGE");
}

#[test]
fn a_spinning_guest_can_be_paused_inspected_resumed_and_stopped() {
    // jmp $
    let Some(m) = machine(&[0xeb, 0xfe], CpuMode::Protected, MachineOptions::default()) else {
        return;
    };
    let rx = start(&m);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        m.with_vcpu(0, |v| v.get_regs()).is_err(),
        "running vCPUs are not inspectable"
    );
    m.pause().unwrap();
    assert!(matches!(next(&rx), Event::Paused));
    assert_eq!(m.with_vcpu(0, |v| v.get_regs()).unwrap().rip, ENTRY);
    m.resume().unwrap();
    m.stop();
    assert_eq!(end(&rx), Outcome::Stopped);
    m.close();
}

#[test]
fn debug_exit_port_ends_the_run_with_the_status() {
    // mov al,0x2a ; out 0xf4,al ; jmp $
    let code = [0xb0, 0x2a, 0xe6, 0xf4, 0xeb, 0xfe];
    let Some(m) = machine(&code, CpuMode::Real, MachineOptions::default()) else {
        return;
    };
    m.add_device(
        Space::Port,
        0xf4,
        1,
        "debug-exit",
        Route::BuiltIn(Arc::new(DebugExit)),
    )
    .unwrap();
    assert_eq!(
        end(&start(&m)),
        Outcome::DeviceRequest {
            device: "debug-exit".into(),
            status: 0x2a
        }
    );
}

#[test]
fn a_failing_handler_stops_the_machine_with_its_message() {
    // out 0x10,al ; hlt
    let Some(m) = machine(
        &[0xe6, 0x10, 0xf4],
        CpuMode::Real,
        MachineOptions::default(),
    ) else {
        return;
    };
    m.add_device(Space::Port, 0x10, 1, "bad", user(1, false))
        .unwrap();
    let rx = start(&m);
    let Event::Access(..) = next(&rx) else {
        panic!()
    };
    m.handoff().fail(0, "device exploded".into()).unwrap();
    let Outcome::Error(e) = end(&rx) else {
        panic!()
    };
    assert_eq!(e.code, "HANDLER_FAILED");
    assert!(e.message.contains("device exploded"), "{}", e.message);
}

#[test]
fn triple_fault_is_reported_as_such() {
    // lidt [0x1100] (an empty IDT) ; ud2  -> #UD -> #GP -> #DF -> triple fault
    let mut code = vec![0x0f, 0x01, 0x1d, 0x00, 0x11, 0x00, 0x00, 0x0f, 0x0b];
    code.resize(0x100, 0);
    code.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let Some(m) = machine(&code, CpuMode::Protected, MachineOptions::default()) else {
        return;
    };
    assert_eq!(end(&start(&m)), Outcome::TripleFault { vcpu: 0 });
}

#[test]
fn posted_writes_let_the_vcpu_run_on_and_arrive_in_order() {
    // mov dx,0x500 ; mov al,1 ; out dx,al ; inc al ; out dx,al ; inc al ; out dx,al ; hlt
    let code = [
        0xba, 0x00, 0x05, 0xb0, 0x01, 0xee, 0xfe, 0xc0, 0xee, 0xfe, 0xc0, 0xee, 0xf4,
    ];
    let Some(m) = machine(&code, CpuMode::Real, MachineOptions::default()) else {
        return;
    };
    m.add_device(Space::Port, 0x500, 1, "log", user(4, true))
        .unwrap();
    let rx = start(&m);
    // Nobody answers: the guest still runs to its hlt.
    let mut posted = Vec::new();
    loop {
        match next(&rx) {
            Event::Posted => m.handoff().take_posted(&mut posted),
            Event::End(o) => {
                assert_eq!(o, Outcome::Halted);
                break;
            }
            _ => panic!("posted writes wait for nobody"),
        }
    }
    m.handoff().take_posted(&mut posted);
    let values: Vec<u64> = posted.iter().map(|w| w.value).collect();
    assert_eq!(values, [1, 2, 3]);
    assert!(
        posted
            .iter()
            .all(|w| w.device == 4 && w.addr == 0x500 && w.size == 1)
    );
}

#[test]
fn an_inline_vcpu_returns_accesses_to_its_caller() {
    let Some(m) = echo_machine() else {
        return;
    };
    let (tx, rx) = channel();
    let mut vcpus = m.start_inline(Channel::taking(tx, &m)).unwrap();
    let vcpu = &mut vcpus[0];
    let read = vcpu.step(None).unwrap().clone();
    assert_eq!((read.kind, read.device), (ExitKind::IoIn, 7));
    let write = vcpu
        .step(Some(InlineAnswer::Reply(&[0x41])))
        .unwrap()
        .clone();
    assert_eq!(
        (write.kind, write.data.as_slice()),
        (ExitKind::IoOut, &[0x42][..])
    );
    assert!(vcpu.step(Some(InlineAnswer::Reply(&[]))).is_none());
    assert_eq!(end(&rx), Outcome::Halted);
    assert_eq!(m.outcome(), Some(Outcome::Halted));
}

#[test]
fn an_inline_vcpu_can_be_stopped_from_another_thread() {
    let Some(m) = machine(&[0xeb, 0xfe], CpuMode::Real, MachineOptions::default()) else {
        return;
    };
    let m = Arc::new(m);
    let (tx, rx) = channel();
    let mut vcpus = m.start_inline(Channel::taking(tx, &m)).unwrap();
    let stopper = Arc::clone(&m);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        stopper.stop();
    });
    assert!(
        vcpus[0].step(None).is_none(),
        "the spinning guest ends only by the stop"
    );
    t.join().unwrap();
    assert_eq!(end(&rx), Outcome::Stopped);
}

#[test]
fn ioeventfd_counts_guest_writes_without_exits() {
    // mov al,7 ; out 0x90,al ; out 0x90,al ; out 0x90,al ; hlt
    let code = [0xb0, 0x07, 0xe6, 0x90, 0xe6, 0x90, 0xe6, 0x90, 0xf4];
    let Some(m) = machine(&code, CpuMode::Real, MachineOptions::default()) else {
        return;
    };
    let event = IoEvent {
        space: Space::Port,
        addr: 0x90,
        len: 1,
        datamatch: Some(7),
    };
    let fd = irq::register_ioeventfd(m.vm(), &event).unwrap();
    assert_eq!(end(&start(&m)), Outcome::Halted);
    assert_eq!(irq::take_count(&fd), 3);
    assert_eq!(m.stats(0).unwrap().exits[ExitKind::IoOut as usize], 0);
}

#[test]
fn single_stepping_exits_with_debug_which_the_policy_reports() {
    // mov al,1 ; hlt
    let Some(m) = machine(
        &[0xb0, 0x01, 0xf4],
        CpuMode::Real,
        MachineOptions::default(),
    ) else {
        return;
    };
    m.with_vcpu(0, |v| v.set_single_step(true)).unwrap();
    let Outcome::Error(e) = end(&start(&m)) else {
        panic!("a debug exit nobody claims ends the run")
    };
    assert_eq!((e.code, e.exit), ("UNHANDLED_EXIT", ExitKind::Debug));
    assert_eq!(
        e.registers.unwrap().rip,
        ENTRY + 2,
        "it stopped after one instruction"
    );
}

#[test]
fn a_polling_thread_takes_accesses_without_doorbells() {
    let Some(m) = echo_machine() else {
        return;
    };
    let (tx, rx) = channel();
    // Poll before the start, so the first access finds the poller waiting.
    let m = Arc::new(m);
    let poller = Arc::clone(&m);
    let t = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let mut got = None;
            while got.is_none() {
                poller
                    .handoff()
                    .poll(Duration::from_millis(100), |vcpu, a| {
                        got = Some((vcpu, a.clone()))
                    });
            }
            let (vcpu, a) = got.unwrap();
            poller.handoff().reply(vcpu, &[0x41]).unwrap();
            seen.push(a.kind);
        }
        seen
    });
    m.start(Channel::ringing(tx)).unwrap();
    assert_eq!(t.join().unwrap(), [ExitKind::IoIn, ExitKind::IoOut]);
    // A doorbell rings only for an access that found no poller waiting.
    let mut doorbells = 0;
    loop {
        match next(&rx) {
            Event::Doorbell => doorbells += 1,
            Event::End(o) => {
                assert_eq!(o, Outcome::Halted);
                break;
            }
            _ => {}
        }
    }
    assert!(doorbells <= 2);
}

/// A Rust device that raises its interrupt line when the guest writes to it.
struct Doorbell(kvmkit_core::irq::IrqLine);

impl kvmkit_core::bus::BusDevice for Doorbell {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) -> Option<kvmkit_core::bus::DeviceAction> {
        self.0.trigger().unwrap();
        None
    }
}

#[test]
fn a_rust_device_raises_an_interrupt_the_guest_takes() {
    // The irq guest (guests/irq.S, real mode): program the PIC with only IRQ 5 open, write
    // port 0x500, wait in hlt; its handler writes 0x25 to the debug-exit port 0xf4.
    let Ok(code) = std::fs::read("../../guests/build/irq.bin") else {
        panic!("build the guests first: make -C guests");
    };
    let options = MachineOptions {
        irqchip: true,
        ..Default::default()
    };
    let Some(m) = machine(&code, CpuMode::Real, options) else {
        return;
    };
    let line = m.irq_line(5).unwrap();
    assert_eq!(line.gsi(), 5);
    let doorbell = Route::BuiltIn(Arc::new(Mutex::new(Doorbell(line))));
    m.add_device(Space::Port, 0x500, 1, "doorbell", doorbell)
        .unwrap();
    let exit = Route::BuiltIn(Arc::new(DebugExit));
    m.add_device(Space::Port, 0xf4, 1, "debug-exit", exit)
        .unwrap();
    assert_eq!(
        end(&start(&m)),
        Outcome::DeviceRequest {
            device: "debug-exit".into(),
            status: 0x25
        }
    );
}

#[test]
fn interrupts_without_the_irqchip_say_it_is_missing() {
    let Some(m) = machine(&[0xf4], CpuMode::Real, MachineOptions::default()) else {
        return;
    };
    let errors = [
        m.set_irq_line(4, true).unwrap_err(),
        m.signal_msi(0xfee0_0000, 0x30).unwrap_err(),
        m.register_irqfd(4).unwrap_err(),
        m.add(DeviceSpec::Serial {
            port: 0x3f8,
            irq: Some(4),
        })
        .unwrap_err(),
    ];
    for e in errors {
        assert_eq!(e.code(), "NO_IRQCHIP");
        assert!(e.to_string().contains("irqchip: true"), "{e}");
    }
}

#[test]
fn the_host_reports_which_capabilities_it_has() {
    let Some(host) = host() else {
        return;
    };
    let info = host.info().unwrap();
    for required in [
        "KVM_CAP_USER_MEMORY",
        "KVM_CAP_SET_TSS_ADDR",
        "KVM_CAP_IMMEDIATE_EXIT",
    ] {
        assert!(info.capabilities.contains(&required), "{required}");
    }
    for (name, _) in &info.missing {
        assert!(!info.capabilities.contains(name), "{name}");
    }
}
