//! What a PC BIOS leaves behind for a kernel it boots, for kernels that expect it (Multiboot
//! kernels, loaded as QEMU's `-kernel` does after SeaBIOS ran): the 8259 PICs initialized
//! with the BIOS's vectors (IRQs 0-7 at 0x08, 8-15 at 0x70, the slave cascaded on IRQ 2),
//! and a real-mode interrupt vector table whose entries lead to handlers that acknowledge a
//! hardware interrupt and return.

use kvm_bindings::{KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_irqchip, kvm_pic_state};
use kvm_ioctls::VmFd;

use crate::error::{Error, Result};
use crate::memory::GuestRam;

/// The vector of IRQ 0 (the master PIC's first line), as a PC BIOS programs it.
pub const MASTER_VECTOR_BASE: u8 = 0x08;
/// The vector of IRQ 8 (the slave PIC's first line), as a PC BIOS programs it.
pub const SLAVE_VECTOR_BASE: u8 = 0x70;
/// The master's mask: the timer (IRQ 0), the keyboard (1) and the cascade (2) unmasked,
/// as SeaBIOS leaves it.
pub const MASTER_MASK: u8 = 0xf8;
/// The slave's mask: every line masked.
pub const SLAVE_MASK: u8 = 0xff;

/// The real-mode interrupt vector table: 256 segment:offset pointers at address 0.
pub const IVT_ADDR: u64 = 0;
/// The segment of the handlers, the BIOS's (F000).
const HANDLER_SEGMENT: u16 = 0xf000;
/// The handlers' offsets in [`HANDLER_SEGMENT`], at the top of the BIOS area where a
/// BIOS's own dummy handler sits (F000:FF53 on a PC/AT; these come after it).
const IRET_OFFSET: u16 = 0xff53;
const MASTER_EOI_OFFSET: u16 = 0xff60;
const SLAVE_EOI_OFFSET: u16 = 0xff70;

/// `iret`.
const IRET: &[u8] = &[0xcf];
/// `push ax; mov al, 0x20; out 0x20, al; pop ax; iret`: a non-specific EOI to the master.
const MASTER_EOI: &[u8] = &[0x50, 0xb0, 0x20, 0xe6, 0x20, 0x58, 0xcf];
/// `push ax; mov al, 0x20; out 0xa0, al; out 0x20, al; pop ax; iret`: EOI to both.
const SLAVE_EOI: &[u8] = &[0x50, 0xb0, 0x20, 0xe6, 0xa0, 0xe6, 0x20, 0x58, 0xcf];

fn linear(offset: u16) -> u64 {
    (u64::from(HANDLER_SEGMENT) << 4) + u64::from(offset)
}

/// The handler offset for interrupt `vector`.
fn handler(vector: u8) -> u16 {
    match vector {
        v if (MASTER_VECTOR_BASE..MASTER_VECTOR_BASE + 8).contains(&v) => MASTER_EOI_OFFSET,
        v if (SLAVE_VECTOR_BASE..SLAVE_VECTOR_BASE + 8).contains(&v) => SLAVE_EOI_OFFSET,
        _ => IRET_OFFSET,
    }
}

/// Writes the interrupt vector table and its handlers: hardware interrupts from either PIC
/// are acknowledged (a non-specific EOI) and return; every other vector just returns.
///
/// # Errors
///
/// [`Error::Memory`] if guest RAM does not cover the first MiB.
pub fn write_ivt(ram: &GuestRam) -> Result<()> {
    let table: Vec<u8> = (0..=255u8)
        .flat_map(|vector| {
            let [o0, o1] = handler(vector).to_le_bytes();
            let [s0, s1] = HANDLER_SEGMENT.to_le_bytes();
            [o0, o1, s0, s1]
        })
        .collect();
    ram.write(IVT_ADDR, &table)?;
    ram.write(linear(IRET_OFFSET), IRET)?;
    ram.write(linear(MASTER_EOI_OFFSET), MASTER_EOI)?;
    ram.write(linear(SLAVE_EOI_OFFSET), SLAVE_EOI)
}

/// `pic` initialized as a BIOS's ICW1-ICW4 leave it: edge-triggered, 8086 mode, `vector` as
/// its base, `mask` as its interrupt mask, nothing pending.
fn initialized(pic: &mut kvm_pic_state, vector: u8, mask: u8) {
    pic.irq_base = vector;
    pic.imr = mask;
    pic.irr = 0;
    pic.isr = 0;
    pic.last_irr = 0;
    pic.priority_add = 0;
    pic.read_reg_select = 0;
    pic.poll = 0;
    pic.special_mask = 0;
    pic.init_state = 0;
    pic.auto_eoi = 0;
    pic.rotate_on_auto_eoi = 0;
    pic.special_fully_nested_mode = 0;
    pic.init4 = 1;
}

/// Programs the in-kernel PICs as a PC BIOS leaves them (see the module documentation).
///
/// # Errors
///
/// [`Error::Kvm`] if the machine has no in-kernel irqchip (`KVM_GET_IRQCHIP` fails).
pub fn program_pics(vm: &VmFd) -> Result<()> {
    for (chip_id, vector, mask) in [
        (KVM_IRQCHIP_PIC_MASTER, MASTER_VECTOR_BASE, MASTER_MASK),
        (KVM_IRQCHIP_PIC_SLAVE, SLAVE_VECTOR_BASE, SLAVE_MASK),
    ] {
        let mut chip = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        vm.get_irqchip(&mut chip)
            .map_err(Error::kvm("KVM_GET_IRQCHIP"))?;
        // SAFETY: for chip_id KVM_IRQCHIP_PIC_MASTER/SLAVE, KVM_GET_IRQCHIP fills the `pic`
        // member of the union; every bit pattern is a valid kvm_pic_state (plain integers).
        let pic = unsafe { &mut chip.chip.pic };
        initialized(pic, vector, mask);
        vm.set_irqchip(&chip)
            .map_err(Error::kvm("KVM_SET_IRQCHIP"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_interrupts_lead_to_an_eoi_and_the_rest_to_iret() {
        assert_eq!(handler(0x08), MASTER_EOI_OFFSET);
        assert_eq!(handler(0x0f), MASTER_EOI_OFFSET);
        assert_eq!(handler(0x70), SLAVE_EOI_OFFSET);
        assert_eq!(handler(0x77), SLAVE_EOI_OFFSET);
        for vector in [0x00, 0x07, 0x10, 0x13, 0x6f, 0x78, 0xff] {
            assert_eq!(handler(vector), IRET_OFFSET, "vector {vector:#x}");
        }
        // The handlers do not overlap and stay inside the segment.
        assert!(linear(IRET_OFFSET) + IRET.len() as u64 <= linear(MASTER_EOI_OFFSET));
        assert!(linear(MASTER_EOI_OFFSET) + MASTER_EOI.len() as u64 <= linear(SLAVE_EOI_OFFSET));
        assert!(linear(SLAVE_EOI_OFFSET) + SLAVE_EOI.len() as u64 <= 0x10_0000);
    }

    #[test]
    fn a_pic_is_left_initialized_with_its_vector_and_mask() {
        let mut pic = kvm_pic_state {
            init_state: 1,
            irr: 0x10,
            ..Default::default()
        };
        initialized(&mut pic, SLAVE_VECTOR_BASE, SLAVE_MASK);
        assert_eq!(
            (pic.irq_base, pic.imr, pic.init_state, pic.irr, pic.init4),
            (0x70, 0xff, 0, 0, 1)
        );
    }
}
