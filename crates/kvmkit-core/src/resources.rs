//! Hands out what devices need from the machine's fixed resources: MMIO windows in the
//! 32-bit hole (between the end of low RAM and the IOAPIC) and interrupt lines (GSIs) on the
//! IOAPIC pins that no ISA device uses by convention.

use crate::error::{Error, Result};
use crate::x86::layout::{MMIO32_END, MMIO32_START};

/// MMIO windows are whole pages, so a guest can map each one on its own.
pub const MMIO_ALIGN: u64 = 0x1000;
/// The GSIs handed out: 5 and up (0-4 are the PIT, keyboard, cascade and COM2/COM1 on a
/// PC) to the last pin of KVM's 24-pin IOAPIC, as Firecracker hands them to its devices.
pub const GSI_FIRST: u32 = 5;
/// The last GSI handed out.
pub const GSI_LAST: u32 = 23;

/// The CMOS RTC's interrupt line, never handed out.
const RTC_GSI: u32 = 8;

/// The allocator. Reservations of ranges and lines chosen by hand (a UART at IRQ 4, a user
/// device at a fixed address) keep allocations off them.
#[derive(Debug)]
pub struct Resources {
    /// Taken MMIO ranges, sorted by start.
    mmio: Vec<(u64, u64)>,
    /// Taken GSIs, one bit each.
    gsis: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Resources::new()
    }
}

impl Resources {
    /// Nothing taken but GSI 8, the CMOS RTC's line on every PC (whether or not the
    /// machine has one, a guest may expect it there).
    pub fn new() -> Self {
        Resources {
            mmio: Vec::new(),
            gsis: 1 << RTC_GSI,
        }
    }

    /// Marks `base..base+len` taken (a no-op outside the hole).
    pub fn reserve_mmio(&mut self, base: u64, len: u64) {
        let end = base.saturating_add(len);
        if end <= MMIO32_START || base >= MMIO32_END || len == 0 {
            return;
        }
        let at = self.mmio.partition_point(|&(s, _)| s < base);
        self.mmio.insert(at, (base, end));
    }

    /// Frees the range reserved or allocated at `base`.
    pub fn release_mmio(&mut self, base: u64) {
        self.mmio.retain(|&(s, _)| s != base);
    }

    /// A free page-aligned window of `len` bytes in the 32-bit hole, now taken.
    ///
    /// # Errors
    ///
    /// `INVALID_CONFIG` for a zero length, `BUS_RANGE` when the hole has no room left.
    pub fn allocate_mmio(&mut self, len: u64) -> Result<u64> {
        if len == 0 {
            return Err(Error::config("length", "must be greater than 0"));
        }
        let size = len.div_ceil(MMIO_ALIGN).saturating_mul(MMIO_ALIGN);
        let mut candidate = MMIO32_START;
        for &(start, end) in &self.mmio {
            if candidate.saturating_add(size) <= start {
                break;
            }
            candidate = candidate.max(end.div_ceil(MMIO_ALIGN) * MMIO_ALIGN);
        }
        if candidate.saturating_add(size) > MMIO32_END {
            return Err(Error::BusRange {
                space: "mmio",
                start: MMIO32_START,
                end: MMIO32_END,
                message: format!(
                    "no free window of {len:#x} bytes is left in the 32-bit hole; place the \
                     device yourself above guest RAM"
                ),
            });
        }
        self.reserve_mmio(candidate, size);
        Ok(candidate)
    }

    /// Marks `gsi` taken (lines may be shared, so taking one twice is not an error).
    pub fn reserve_gsi(&mut self, gsi: u32) {
        if gsi < 64 {
            self.gsis |= 1 << gsi;
        }
    }

    /// The lowest free GSI from [`GSI_FIRST`] to [`GSI_LAST`], now taken.
    ///
    /// # Errors
    ///
    /// `INVALID_CONFIG` when every one is taken.
    pub fn allocate_gsi(&mut self) -> Result<u32> {
        let gsi = (GSI_FIRST..=GSI_LAST)
            .find(|&g| self.gsis & (1 << g) == 0)
            .ok_or_else(|| {
                Error::config(
                    "irq",
                    format!("every interrupt line from {GSI_FIRST} to {GSI_LAST} is taken"),
                )
            })?;
        self.reserve_gsi(gsi);
        Ok(gsi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmio_windows_are_page_aligned_in_the_hole_and_never_overlap() {
        let mut r = Resources::new();
        let a = r.allocate_mmio(0x200).unwrap();
        let b = r.allocate_mmio(0x1000).unwrap();
        let c = r.allocate_mmio(0x1001).unwrap();
        assert_eq!(a, MMIO32_START);
        assert_eq!(b, MMIO32_START + 0x1000, "0x200 bytes still take a page");
        assert_eq!(c, MMIO32_START + 0x2000);
        assert_eq!(r.allocate_mmio(1).unwrap(), MMIO32_START + 0x4000);
    }

    #[test]
    fn allocation_skips_reserved_ranges_and_reuses_released_ones() {
        let mut r = Resources::new();
        r.reserve_mmio(MMIO32_START + 0x800, 0x10);
        r.reserve_mmio(0xd000_0000 - 0x10, 0x20);
        r.reserve_mmio(0x1000, 0x1000); // below the hole: ignored
        let a = r.allocate_mmio(0x1000).unwrap();
        assert_eq!(a, MMIO32_START + 0x1000);
        r.release_mmio(MMIO32_START + 0x800);
        assert_eq!(r.allocate_mmio(0x1000).unwrap(), MMIO32_START);
        let big = r
            .allocate_mmio(0xd000_0000 - MMIO32_START - 0x2000)
            .unwrap();
        assert_eq!(
            big,
            0xd000_0000 + 0x1000,
            "past the reservation straddling 0xd0000000"
        );
    }

    #[test]
    fn a_full_hole_is_an_error_naming_the_fix() {
        let mut r = Resources::new();
        r.allocate_mmio(MMIO32_END - MMIO32_START).unwrap();
        let err = r.allocate_mmio(0x1000).unwrap_err();
        assert_eq!(err.code(), "BUS_RANGE");
        assert!(err.to_string().contains("place the device yourself"));
        assert_eq!(r.allocate_mmio(0).unwrap_err().code(), "INVALID_CONFIG");
    }

    #[test]
    fn gsis_come_from_5_to_23_around_reserved_lines() {
        let mut r = Resources::new();
        r.reserve_gsi(4);
        r.reserve_gsi(6);
        assert_eq!(r.allocate_gsi().unwrap(), 5);
        assert_eq!(r.allocate_gsi().unwrap(), 7);
        for _ in 9..=GSI_LAST {
            r.allocate_gsi().unwrap();
        }
        assert_eq!(r.allocate_gsi().unwrap_err().code(), "INVALID_CONFIG");
    }
}
