//! What a vCPU exit looks like once it leaves the Rust run loop, and how a run ends.

/// The kinds of vCPU exit kvmkit distinguishes. Counters and handlers are indexed by these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ExitKind {
    /// Port-I/O read (`in`, `ins`).
    IoIn = 0,
    /// Port-I/O write (`out`, `outs`).
    IoOut = 1,
    /// MMIO read of unmapped guest-physical memory.
    MmioRead = 2,
    /// MMIO write to unmapped guest-physical memory.
    MmioWrite = 3,
    /// `hlt` with no in-kernel irqchip.
    Hlt = 4,
    /// Triple fault.
    Shutdown = 5,
    /// `KVM_EXIT_SYSTEM_EVENT`: shutdown, reset or crash requested through the platform.
    SystemEvent = 6,
    /// `KVM_EXIT_INTERNAL_ERROR`, such as an instruction the host's emulator cannot run.
    InternalError = 7,
    /// `KVM_EXIT_FAIL_ENTRY`: the hardware refused to enter the guest.
    FailEntry = 8,
    /// `KVM_EXIT_DEBUG`: a guest debug event.
    Debug = 9,
    /// `KVM_EXIT_IRQ_WINDOW_OPEN`: the guest can take an interrupt now.
    IrqWindowOpen = 10,
    /// `KVM_EXIT_UNKNOWN`.
    Unknown = 11,
    /// The run was interrupted by the host (a stop, pause or signal).
    Interrupted = 12,
    /// Any other exit reason.
    Other = 13,
}

impl ExitKind {
    /// Number of kinds, for per-kind arrays.
    pub const COUNT: usize = 14;

    /// Every kind, in index order.
    pub const ALL: [ExitKind; Self::COUNT] = [
        ExitKind::IoIn,
        ExitKind::IoOut,
        ExitKind::MmioRead,
        ExitKind::MmioWrite,
        ExitKind::Hlt,
        ExitKind::Shutdown,
        ExitKind::SystemEvent,
        ExitKind::InternalError,
        ExitKind::FailEntry,
        ExitKind::Debug,
        ExitKind::IrqWindowOpen,
        ExitKind::Unknown,
        ExitKind::Interrupted,
        ExitKind::Other,
    ];

    /// Whether the guest writes: a port or MMIO write.
    pub fn is_write(self) -> bool {
        matches!(self, ExitKind::IoOut | ExitKind::MmioWrite)
    }

    /// The name used in statistics and error messages, such as `io-in`.
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::IoIn => "io-in",
            ExitKind::IoOut => "io-out",
            ExitKind::MmioRead => "mmio-read",
            ExitKind::MmioWrite => "mmio-write",
            ExitKind::Hlt => "hlt",
            ExitKind::Shutdown => "shutdown",
            ExitKind::SystemEvent => "system-event",
            ExitKind::InternalError => "internal-error",
            ExitKind::FailEntry => "fail-entry",
            ExitKind::Debug => "debug",
            ExitKind::IrqWindowOpen => "irq-window-open",
            ExitKind::Unknown => "unknown",
            ExitKind::Interrupted => "interrupted",
            ExitKind::Other => "other",
        }
    }
}

/// A device access that a user (TypeScript) device must answer.
///
/// The run loop owns one of these per vCPU and refills it for every access, so delivering an
/// exit allocates nothing.
#[derive(Debug, Clone)]
pub struct DeviceAccess {
    /// [`ExitKind::IoIn`], [`ExitKind::IoOut`], [`ExitKind::MmioRead`] or [`ExitKind::MmioWrite`].
    pub kind: ExitKind,
    /// The id the device was registered with.
    pub device: u32,
    /// Offset of the access from the start of the device's range.
    pub offset: u64,
    /// Absolute port or guest-physical address.
    pub addr: u64,
    /// Access width in bytes (1, 2, 4; 8 for MMIO).
    pub size: u32,
    /// Repeat count of string I/O (`rep outsb` etc.), 1 otherwise.
    pub count: u32,
    /// For writes, the bytes written (`size * count` of them); empty for reads.
    pub data: Vec<u8>,
}

impl DeviceAccess {
    /// A blank record whose data buffer can take any access without growing.
    pub fn with_capacity(capacity: usize) -> Self {
        DeviceAccess {
            kind: ExitKind::IoIn,
            device: 0,
            offset: 0,
            addr: 0,
            size: 0,
            count: 0,
            data: Vec::with_capacity(capacity),
        }
    }

    /// The value of a single write (its first 8 bytes, little-endian, zero-extended); 0 for
    /// reads.
    pub fn value(&self) -> u64 {
        value_of(&self.data)
    }

    /// A one-byte port read at `addr` by user device 1, for tests.
    #[cfg(test)]
    pub(crate) fn port_read(addr: u64) -> Self {
        DeviceAccess {
            kind: ExitKind::IoIn,
            device: 1,
            offset: 0,
            addr,
            size: 1,
            count: 1,
            data: Vec::new(),
        }
    }

    /// Whether the guest is reading (the handler must supply `size * count` bytes).
    pub fn is_read(&self) -> bool {
        matches!(self.kind, ExitKind::IoIn | ExitKind::MmioRead)
    }
}

/// The first 8 bytes of `bytes` as a little-endian number, zero-extended. (This and the
/// two below are inlined into the exit path, where a call would be a code page of its own.)
#[inline(always)]
pub fn value_of(bytes: &[u8]) -> u64 {
    // The access widths are read at their size: a copy of variable length would be a call
    // to libc's `memcpy`, whose code page an exit would then touch too.
    match *bytes {
        [] => 0,
        [a] => u64::from(a),
        [a, b] => u64::from(u16::from_le_bytes([a, b])),
        [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h, ..] => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
        _ => {
            let mut v = [0u8; 8];
            v[..bytes.len()].copy_from_slice(bytes);
            u64::from_le_bytes(v)
        }
    }
}

/// Writes `value` into `bytes`, little-endian, for the access widths (1, 2, 4 or 8 bytes),
/// again without a call to `memcpy` (see [`value_of`]); false, writing nothing, for other
/// lengths.
#[inline(always)]
pub fn put_value(bytes: &mut [u8], value: u64) -> bool {
    let v = value.to_le_bytes();
    match bytes.len() {
        1 => bytes.copy_from_slice(&v[..1]),
        2 => bytes.copy_from_slice(&v[..2]),
        4 => bytes.copy_from_slice(&v[..4]),
        8 => bytes.copy_from_slice(&v),
        _ => return false,
    }
    true
}

/// Appends `bytes` to `out`. Up to 8 bytes (a single access's) go in as one 8-byte store
/// cut to size, again without a call to `memcpy` (see [`value_of`]).
#[inline(always)]
pub(crate) fn append_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let at = out.len();
    match bytes.len() {
        0 => {}
        n @ 1..=8 => {
            out.extend_from_slice(&value_of(bytes).to_le_bytes());
            out.truncate(at + n);
        }
        _ => out.extend_from_slice(bytes),
    }
}

/// The system event types of `KVM_EXIT_SYSTEM_EVENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemEvent {
    /// The guest asked to power off.
    Shutdown,
    /// The guest asked to reset.
    Reset,
    /// The guest reported a crash.
    Crash,
    /// Another event type.
    Other(u32),
}

/// The general registers and the state needed to explain a failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegisterSnapshot {
    /// Instruction pointer.
    pub rip: u64,
    /// Flags.
    pub rflags: u64,
    /// rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp in that order.
    pub gprs: [u64; 8],
    /// Code segment selector.
    pub cs: u16,
    /// Code segment base.
    pub cs_base: u64,
    /// CR0.
    pub cr0: u64,
    /// EFER.
    pub efer: u64,
}

/// Why a machine stopped with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineError {
    /// Stable code such as `UNHANDLED_EXIT`, `HANDLER_FAILED`, `EMULATION_FAILURE`.
    pub code: &'static str,
    /// A sentence saying what happened, with the exit, address and RIP.
    pub message: String,
    /// The vCPU the error happened on.
    pub vcpu: u32,
    /// The exit that caused it.
    pub exit: ExitKind,
    /// The registers at the time, when they could be read.
    pub registers: Option<RegisterSnapshot>,
    /// The instruction bytes at RIP, when they could be read (up to 15).
    pub instruction: Vec<u8>,
}

/// How a machine's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every vCPU executed `hlt`.
    Halted,
    /// The guest triple-faulted (`KVM_EXIT_SHUTDOWN`).
    TripleFault {
        /// The vCPU that faulted.
        vcpu: u32,
    },
    /// The guest requested shutdown, reset or reported a crash.
    SystemEvent {
        /// Which event.
        event: SystemEvent,
        /// The vCPU that raised it.
        vcpu: u32,
    },
    /// A device asked for a power-off or reset (for example the debug-exit port).
    DeviceRequest {
        /// The device's name.
        device: String,
        /// The status the guest wrote.
        status: u32,
    },
    /// The host stopped the machine.
    Stopped,
    /// The machine stopped because of an error.
    Error(MachineError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_its_first_eight_bytes_little_endian_zero_extended() {
        let bytes = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99];
        for n in 0..=bytes.len() {
            let expected = bytes[..n.min(8)]
                .iter()
                .rev()
                .fold(0u64, |v, &b| (v << 8) | u64::from(b));
            assert_eq!(value_of(&bytes[..n]), expected, "{n} bytes");
        }
    }

    #[test]
    fn a_value_is_put_at_the_access_widths_only() {
        for n in 0..=9 {
            let mut bytes = vec![0xee; n];
            let put = put_value(&mut bytes, 0x8877_6655_4433_2211);
            assert_eq!(put, matches!(n, 1 | 2 | 4 | 8), "{n} bytes");
            let expected: Vec<u8> = if put {
                [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88][..n].to_vec()
            } else {
                vec![0xee; n]
            };
            assert_eq!(bytes, expected, "{n} bytes");
        }
    }

    #[test]
    fn appended_bytes_follow_what_was_there_whole() {
        let source: Vec<u8> = (1..=20).collect();
        for n in 0..=source.len() {
            let mut out = vec![0xaa, 0xbb];
            append_bytes(&mut out, &source[..n]);
            assert_eq!(out[..2], [0xaa, 0xbb]);
            assert_eq!(out[2..], source[..n], "{n} bytes");
        }
    }
}
