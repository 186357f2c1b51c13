//! Where a port or MMIO access goes: a built-in device answers it here, a user device gets
//! it through the loop, and an access nobody claims follows the machine's
//! [`UnhandledPolicy`]. A pure function of the resolved target and the exit, so it is tested
//! with synthetic exits.

use crate::bus::{DeviceAction, Route, Target};
use crate::exit::{ExitKind, Outcome, SystemEvent, value_of};
use crate::vm::options::UnhandledPolicy;

use super::Step;

/// Routes an access of `data.len() / size` elements of `size` bytes at `addr` by vCPU
/// `vcpu` to `target`, what the bus resolved it to. For reads answered here, `data`
/// receives the bytes read.
///
/// Inlined into the loop, with the rare outcomes out of line: after `KVM_RUN`, every code
/// and stack line the exit path touches is a cache miss (measured on the software-assisted
/// host: ~2 ns a line, ~3 ns a page), and a call of its own cost a built-in exit ~15 ns.
#[inline(always)]
pub(super) fn route(
    target: Option<Target<'_>>,
    policy: UnhandledPolicy,
    vcpu: u32,
    kind: ExitKind,
    addr: u64,
    size: usize,
    data: &mut [u8],
) -> Step {
    let write = kind.is_write();
    let Some(target) = target else {
        return unclaimed(policy, kind, addr, size, data);
    };
    match target.route {
        Route::BuiltIn(device) => match device.access(target.offset, size, write, data) {
            None => Step::Continue,
            Some(action) => requested(action, vcpu),
        },
        Route::User { device, posted } => Step::User {
            device: *device,
            offset: target.offset,
            posted: *posted,
        },
    }
}

/// How the run ends after a built-in device asked for `action`.
#[cold]
fn requested(action: DeviceAction, vcpu: u32) -> Step {
    let event = match action {
        DeviceAction::Exit { device, status } => {
            return Step::End(Box::new(Outcome::DeviceRequest {
                device: device.into(),
                status,
            }));
        }
        DeviceAction::Reset { .. } => SystemEvent::Reset,
        DeviceAction::PowerOff { .. } => SystemEvent::Shutdown,
    };
    Step::End(Box::new(Outcome::SystemEvent { event, vcpu }))
}

#[cold]
fn unclaimed(
    policy: UnhandledPolicy,
    kind: ExitKind,
    addr: u64,
    size: usize,
    data: &mut [u8],
) -> Step {
    let write = kind.is_write();
    if policy == UnhandledPolicy::Ignore {
        if !write {
            data.fill(0xff);
        }
        return Step::Continue;
    }
    let space = if matches!(kind, ExitKind::IoIn | ExitKind::IoOut) {
        "port"
    } else {
        "address"
    };
    let what = if write {
        format!("write of {:#x}", value_of(&data[..size.min(data.len())]))
    } else {
        "read".to_string()
    };
    let count = data.len() / size.max(1);
    let repeat = if count > 1 {
        format!(", repeated {count} times")
    } else {
        String::new()
    };
    Step::Fail {
        code: "UNHANDLED_EXIT",
        exit: kind,
        message: format!(
            "unhandled {} at {space} {addr:#x}: {size}-byte {what}{repeat}, and no device is \
             registered there",
            kind.name()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, BusDevice};
    use std::sync::{Arc, Mutex};

    /// Reads 0x5a; a write of 0xff asks for a reset, any other ends the run with its value.
    struct Probe;

    impl BusDevice for Probe {
        fn read(&mut self, _: u64, data: &mut [u8]) {
            data.fill(0x5a);
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceAction> {
            match (offset, data[0]) {
                (0, _) => None,
                (_, 0xff) => Some(DeviceAction::Reset { device: "probe" }),
                (_, status) => Some(DeviceAction::Exit {
                    device: "probe",
                    status: status.into(),
                }),
            }
        }
    }

    fn bus() -> Bus {
        let mut bus = Bus::ports();
        bus.insert(
            0x70,
            2,
            "probe",
            Route::BuiltIn(Arc::new(Mutex::new(Probe))),
        )
        .unwrap();
        let user = Route::User {
            device: 7,
            posted: true,
        };
        bus.insert(0x60, 8, "echo", user).unwrap();
        bus
    }

    fn port(kind: ExitKind, addr: u64, size: usize, data: &mut [u8]) -> Step {
        let bus = bus();
        let target = bus.resolve(addr, size as u64);
        route(target, UnhandledPolicy::Error, 1, kind, addr, size, data)
    }

    #[test]
    fn a_built_in_device_answers_every_element_of_a_string_read() {
        let mut data = [0u8; 4];
        assert_eq!(port(ExitKind::IoIn, 0x70, 2, &mut data), Step::Continue);
        assert_eq!(data, [0x5a; 4]);
    }

    #[test]
    fn a_user_device_gets_the_access_with_its_offset_and_posting() {
        let step = port(ExitKind::IoOut, 0x62, 1, &mut [1]);
        assert_eq!(
            step,
            Step::User {
                device: 7,
                offset: 2,
                posted: true
            }
        );
    }

    #[test]
    fn a_step_is_moved_without_a_call_to_memcpy() {
        // Every exit moves the `Step` it is routed to; LLVM copies values beyond ~128 bytes
        // by calling libc's `memcpy`, one more code page on every exit.
        assert!(
            std::mem::size_of::<Step>() <= 64,
            "{}",
            std::mem::size_of::<Step>()
        );
    }

    #[test]
    fn a_device_action_ends_the_run_after_the_elements_before_it() {
        assert_eq!(port(ExitKind::IoOut, 0x70, 1, &mut [9, 9]), Step::Continue);
        let step = port(ExitKind::IoOut, 0x71, 1, &mut [3]);
        let Step::End(outcome) = step else {
            panic!("expected the run to end, got {step:?}");
        };
        let Outcome::DeviceRequest { device, status } = *outcome else {
            panic!("expected a device request, got {outcome:?}");
        };
        assert_eq!((device.as_str(), status), ("probe", 3));
        assert_eq!(
            port(ExitKind::IoOut, 0x71, 1, &mut [0xff]),
            Step::End(Box::new(Outcome::SystemEvent {
                event: SystemEvent::Reset,
                vcpu: 1
            }))
        );
    }

    #[test]
    fn an_unclaimed_write_fails_naming_port_width_value_and_repeat() {
        let Step::Fail {
            code,
            exit,
            message,
        } = port(ExitKind::IoOut, 0x80, 1, &mut [0x55, 0x56])
        else {
            panic!("expected a failure");
        };
        assert_eq!((code, exit), ("UNHANDLED_EXIT", ExitKind::IoOut));
        assert_eq!(
            message,
            "unhandled io-out at port 0x80: 1-byte write of 0x55, repeated 2 times, and no \
             device is registered there"
        );
    }

    #[test]
    fn the_ignore_policy_reads_all_ones_and_drops_writes() {
        let mut data = [0u8; 2];
        let step = route(
            None,
            UnhandledPolicy::Ignore,
            0,
            ExitKind::IoIn,
            0x80,
            2,
            &mut data,
        );
        assert_eq!((step, data), (Step::Continue, [0xff; 2]));
        let step = route(
            None,
            UnhandledPolicy::Ignore,
            0,
            ExitKind::MmioWrite,
            0x80,
            4,
            &mut [1; 4],
        );
        assert_eq!(step, Step::Continue);
    }
}
