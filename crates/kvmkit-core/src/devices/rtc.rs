//! The CMOS real-time clock at ports 0x70 (index) and 0x71 (data), reading the host's time
//! in BCD, 24-hour mode, as a PC's MC146818 does after the BIOS set it up.

use crate::bus::{BusDevice, DeviceAction};

/// The index port; the data port follows it.
pub const RTC_PORT: u16 = 0x70;
/// Ports it occupies.
pub const RTC_PORTS: u16 = 2;

const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const WEEKDAY: u8 = 0x06;
const DAY: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const STATUS_A: u8 = 0x0a;
const STATUS_B: u8 = 0x0b;
const STATUS_D: u8 = 0x0d;
const CENTURY: u8 = 0x32;

/// Status B: 24-hour clock, BCD values.
const STATUS_B_24H: u8 = 0x02;
/// Status D: the CMOS battery is good.
const STATUS_D_VALID: u8 = 0x80;

/// The clock, with 128 bytes of CMOS RAM for the registers it does not compute.
#[derive(Debug)]
pub struct Rtc {
    index: u8,
    ram: [u8; 128],
    now: fn() -> i64,
}

fn host_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Default for Rtc {
    fn default() -> Self {
        Rtc::with_clock(host_now)
    }
}

fn bcd(v: i64) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

impl Rtc {
    /// A clock reading `now` (seconds since the Unix epoch, UTC).
    pub fn with_clock(now: fn() -> i64) -> Self {
        Rtc {
            index: 0,
            ram: [0; 128],
            now,
        }
    }

    fn register(&self, index: u8) -> u8 {
        let t = (self.now)();
        let days = t.div_euclid(86_400);
        let secs = t.rem_euclid(86_400);
        let (year, month, day) = civil(days);
        match index {
            SECONDS => bcd(secs % 60),
            MINUTES => bcd(secs / 60 % 60),
            HOURS => bcd(secs / 3600),
            WEEKDAY => bcd((days + 4).rem_euclid(7) + 1),
            DAY => bcd(day),
            MONTH => bcd(month),
            YEAR => bcd(year % 100),
            CENTURY => bcd(year / 100),
            STATUS_A => 0x26, // no update in progress; 32.768 kHz, 1024 Hz rate
            STATUS_B => STATUS_B_24H,
            STATUS_D => STATUS_D_VALID,
            other => self.ram[usize::from(other & 0x7f)],
        }
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = if offset == 1 {
            self.register(self.index)
        } else {
            0xff
        };
        data.fill(value);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceAction> {
        let value = data.first().copied().unwrap_or(0);
        if offset == 0 {
            // Bit 7 masks NMIs on real hardware; the index is the low 7 bits.
            self.index = value & 0x7f;
        } else {
            self.ram[usize::from(self.index)] = value;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(rtc: &mut Rtc, index: u8) -> u8 {
        rtc.write(0, &[index]);
        let mut v = [0u8];
        rtc.read(1, &mut v);
        v[0]
    }

    #[test]
    fn reads_the_time_in_bcd() {
        // 2026-11-22 01:34:56 UTC, a Sunday.
        let mut rtc = Rtc::with_clock(|| 1_795_311_296);
        assert_eq!(read(&mut rtc, SECONDS), 0x56);
        assert_eq!(read(&mut rtc, MINUTES), 0x34);
        assert_eq!(read(&mut rtc, HOURS), 0x01);
        assert_eq!(read(&mut rtc, DAY), 0x22);
        assert_eq!(read(&mut rtc, MONTH), 0x11);
        assert_eq!(read(&mut rtc, YEAR), 0x26);
        assert_eq!(read(&mut rtc, CENTURY), 0x20);
        assert_eq!(read(&mut rtc, WEEKDAY), 0x01);
        assert_eq!(read(&mut rtc, STATUS_A) & 0x80, 0, "no update in progress");
        assert_eq!(read(&mut rtc, STATUS_B), STATUS_B_24H);
        assert_eq!(read(&mut rtc, STATUS_D), STATUS_D_VALID);
    }

    #[test]
    fn other_registers_are_cmos_ram() {
        let mut rtc = Rtc::default();
        rtc.write(0, &[0x80 | 0x40]);
        rtc.write(1, &[0x5a]);
        assert_eq!(read(&mut rtc, 0x40), 0x5a);
    }

    #[test]
    fn dates_convert_across_leap_years() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_417), (2023, 3, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }
}
