//! The error type of kvmkit-core.
//!
//! Every fallible operation returns [`Error`]. Each variant carries what a user needs to act on
//! it: the field and limit for configuration errors, the ioctl for KVM failures, the address for
//! guest-memory errors. [`Error::code`] gives a stable machine-readable code that the Node
//! binding exposes as `error.code`.

use std::io;

/// Everything that can go wrong in kvmkit-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/kvm` does not exist: KVM is not available on this host.
    #[error(
        "{path} does not exist: this host has no KVM. Load the kvm module (kvm_intel or kvm_amd) \
         on a machine with hardware virtualization enabled, or run inside a VM with nested \
         virtualization"
    )]
    KvmNotFound {
        /// The device path that was opened.
        path: String,
    },
    /// `/dev/kvm` exists but this process may not open it read-write.
    #[error(
        "permission denied opening {path}: add your user to the group that owns it \
         (usually `sudo usermod -aG kvm $USER`, then log in again) or grant access with \
         `sudo setfacl -m u:$USER:rw {path}`"
    )]
    KvmPermissionDenied {
        /// The device path that was opened.
        path: String,
    },
    /// Opening `/dev/kvm` failed for another reason.
    #[error("cannot open {path}: {source}")]
    KvmOpen {
        /// The device path that was opened.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The kernel reports a KVM API version other than the stable one (12).
    #[error("KVM API version {found} is not supported: kvmkit needs version {expected}")]
    KvmApiVersion {
        /// What `KVM_GET_API_VERSION` returned.
        found: i32,
        /// What kvmkit needs.
        expected: i32,
    },
    /// A KVM capability kvmkit relies on is missing.
    #[error("the host's KVM lacks the {name} capability, which kvmkit needs: {why}")]
    MissingCapability {
        /// The capability's name, as in the KVM API documentation.
        name: &'static str,
        /// What kvmkit needs it for.
        why: &'static str,
    },
    /// A KVM ioctl failed.
    #[error("{op} failed: {source}")]
    Kvm {
        /// The operation (ioctl name) that failed.
        op: &'static str,
        /// The errno it returned.
        source: kvm_ioctls::Error,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid config: {field}: {message}")]
    InvalidConfig {
        /// The path of the offending field, such as `memory.regions[1].size`.
        field: String,
        /// What is wrong and what the limit is.
        message: String,
    },
    /// Mapping host memory for the guest failed.
    #[error("cannot map {size} bytes of guest memory at {guest_addr:#x}: {message}")]
    MemoryMap {
        /// Guest-physical start of the region.
        guest_addr: u64,
        /// Size of the region in bytes.
        size: u64,
        /// Why the mapping failed.
        message: String,
    },
    /// A guest-memory access fell outside guest RAM.
    #[error(
        "guest memory access of {len} bytes at {addr:#x} is outside guest RAM \
         (it must lie within one memory region)"
    )]
    GuestMemoryRange {
        /// Guest-physical address of the access.
        addr: u64,
        /// Length of the access in bytes.
        len: u64,
    },
    /// A device registration overlaps another or is empty.
    #[error("cannot register {space} range {start:#x}..{end:#x}: {message}")]
    BusRange {
        /// `port` or `mmio`.
        space: &'static str,
        /// First address of the range.
        start: u64,
        /// One past the last address.
        end: u64,
        /// Why the range was refused.
        message: String,
    },
    /// A vCPU index is out of range.
    #[error("vCPU {index} does not exist: this machine has {count} vCPU(s)")]
    NoSuchVcpu {
        /// The index asked for.
        index: u32,
        /// The number of vCPUs.
        count: u32,
    },
    /// An operation needs a different lifecycle state.
    #[error("cannot {op}: the machine is {state}")]
    InvalidState {
        /// The operation attempted.
        op: &'static str,
        /// The machine's state.
        state: &'static str,
    },
    /// A device answer was given for a vCPU that is not waiting for one.
    #[error(
        "vCPU {vcpu} is not waiting for a device answer (it was answered already, or the \
         machine stopped)"
    )]
    NotWaiting {
        /// The vCPU.
        vcpu: u32,
    },
    /// A device answer is longer than any access can take.
    #[error("a device answer of {len} bytes is longer than the 4096 bytes an access can take")]
    ReplyTooLong {
        /// The answer's length.
        len: usize,
    },
    /// A kernel or initrd image cannot be used.
    #[error("{what} {file}: {message}")]
    Image {
        /// The file.
        file: String,
        /// `kernel` or `initrd`.
        what: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// An interrupt operation on a machine created without the in-kernel irqchip.
    #[error(
        "cannot {op}: this machine has no in-kernel interrupt controller; create it with \
         irqchip enabled (Machine.create({{ ..., irqchip: true }}) in Node)"
    )]
    NoIrqchip {
        /// What was attempted.
        op: &'static str,
    },
    /// A disk image cannot be used as a virtio-blk disk.
    #[error("disk {path}: {message}")]
    Disk {
        /// The image (or overlay) file.
        path: String,
        /// What is wrong with it and what to do.
        message: String,
    },
    /// A device refused an operation.
    #[error("{device}: {message}")]
    Device {
        /// The device.
        device: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A vsock port is listened on already.
    #[error(
        "vsock port {port} is listened on already: close its listener first, or listen on \
         another port"
    )]
    PortInUse {
        /// The port.
        port: u32,
    },
    /// Creating an eventfd failed.
    #[error("cannot create an eventfd: {0}")]
    EventFd(io::Error),
    /// Starting a vCPU thread failed.
    #[error("cannot start vCPU thread: {0}")]
    Thread(io::Error),
    /// The vCPU threads' seccomp sandbox could not be built or installed.
    #[error(
        "cannot sandbox the vCPU threads: {0}. Run without MachineOptions::sandbox, or on a \
         kernel with seccomp filters (CONFIG_SECCOMP_FILTER)"
    )]
    Sandbox(String),
    /// A TAP interface cannot be used (code `TAP_NOT_FOUND`, `TAP_PERMISSION_DENIED` or
    /// `TAP_FAILED`).
    #[error(transparent)]
    Tap(#[from] crate::virtio::net::TapError),
    /// A vhost backend cannot be used (code `VHOST_UNAVAILABLE`, `VHOST_FAILED`,
    /// `VSOCK_CID_IN_USE` or `VHOST_IN_KERNEL`).
    #[error(transparent)]
    Vhost(#[from] crate::virtio::vhost::VhostError),
}

impl Error {
    /// A stable, machine-readable code for this error, such as `KVM_NOT_FOUND`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::KvmNotFound { .. } => "KVM_NOT_FOUND",
            Error::KvmPermissionDenied { .. } => "KVM_PERMISSION_DENIED",
            Error::KvmOpen { .. } => "KVM_OPEN_FAILED",
            Error::KvmApiVersion { .. } => "KVM_API_VERSION",
            Error::MissingCapability { .. } => "KVM_MISSING_CAPABILITY",
            Error::Kvm { .. } => "KVM_IOCTL_FAILED",
            Error::InvalidConfig { .. } => "INVALID_CONFIG",
            Error::MemoryMap { .. } => "MEMORY_MAP_FAILED",
            Error::GuestMemoryRange { .. } => "GUEST_MEMORY_RANGE",
            Error::BusRange { .. } => "BUS_RANGE",
            Error::NoSuchVcpu { .. } => "NO_SUCH_VCPU",
            Error::InvalidState { .. } => "INVALID_STATE",
            Error::NotWaiting { .. } => "NOT_WAITING",
            Error::ReplyTooLong { .. } => "REPLY_TOO_LONG",
            Error::Image { .. } => "BAD_IMAGE",
            Error::NoIrqchip { .. } => "NO_IRQCHIP",
            Error::Disk { .. } => "BAD_DISK",
            Error::Device { .. } => "DEVICE_FAILED",
            Error::PortInUse { .. } => "PORT_IN_USE",
            Error::EventFd(_) => "EVENTFD_FAILED",
            Error::Thread(_) => "THREAD_FAILED",
            Error::Sandbox(_) => "SANDBOX_FAILED",
            Error::Tap(e) => e.code(),
            Error::Vhost(e) => e.code(),
        }
    }

    /// Builds an [`Error::InvalidConfig`].
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Builds a closure that wraps a KVM ioctl error with the operation's name.
    pub fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::Kvm { op, source }
    }
}

/// The result type of kvmkit-core.
pub type Result<T> = std::result::Result<T, Error>;
