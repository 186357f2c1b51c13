//! The CMOS clock's index and data registers under any sequence of guest reads and writes,
//! at any time the host's clock may give: nothing panics, and the time reads in BCD.
#![no_main]

use kvmkit_core::bus::BusDevice;
use kvmkit_core::devices::Rtc;
use kvmkit_core::devices::rtc::RTC_PORTS;
use kvmkit_fuzz::{accesses, apply};
use libfuzzer_sys::fuzz_target;

/// The clock registers (seconds, minutes, hours, weekday, day, month, year, century).
const TIME: [u8; 8] = [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32];

fn bcd(v: u8) -> bool {
    v >> 4 < 10 && v & 0xf < 10
}

fuzz_target!(|data: &[u8]| {
    // Clocks from far before 1970 to far after 2100, as the first 4 bytes say.
    let (clock, data) = data.split_at_checked(4).unwrap_or((&[0; 4], data));
    let mut rtc = Rtc::with_clock(match clock[0] % 4 {
        0 => || 0,
        1 => || -86_400 * 365 * 100,
        2 => || 4_102_444_800 + 86_399, // 2100-01-01 23:59:59
        _ => || i64::from(u32::MAX) * 4,
    });
    for a in accesses(data, RTC_PORTS.into()) {
        apply(&mut rtc, a);
    }
    for index in TIME {
        rtc.write(0, &[index]);
        let mut value = [0];
        rtc.read(1, &mut value);
        assert!(bcd(value[0]), "register {index:#x} reads {:#x}", value[0]);
    }
});
