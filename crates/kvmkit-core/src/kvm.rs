//! Opening `/dev/kvm` and checking what the host's KVM offers.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::fd::{FromRawFd, IntoRawFd};

use kvm_ioctls::{Cap, Kvm};

use crate::error::{Error, Result};

/// The default KVM device node.
pub const KVM_PATH: &str = "/dev/kvm";

/// The only stable KVM API version.
pub const KVM_API_VERSION: i32 = 12;

/// Capabilities kvmkit cannot work without, with the reason shown to the user.
const REQUIRED_CAPS: &[(Cap, &str, &str)] = &[
    (
        Cap::UserMemory,
        "KVM_CAP_USER_MEMORY",
        "guest RAM is host memory mapped into the VM",
    ),
    (
        Cap::SetTssAddr,
        "KVM_CAP_SET_TSS_ADDR",
        "x86 guests need a TSS area for real-mode emulation",
    ),
    (
        Cap::ImmediateExit,
        "KVM_CAP_IMMEDIATE_EXIT",
        "stopping a running vCPU without races",
    ),
];

/// Capabilities kvmkit uses where the host has them, with what needs each.
const OPTIONAL_CAPS: &[(Cap, &str, &str)] = &[
    (Cap::Irqchip, "KVM_CAP_IRQCHIP", "irqchip: true"),
    (Cap::Pit2, "KVM_CAP_PIT2", "irqchip: true"),
    (
        Cap::Irqfd,
        "KVM_CAP_IRQFD",
        "irqfds and the serial port's IRQ",
    ),
    (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD", "ioeventfds"),
    (Cap::SignalMsi, "KVM_CAP_SIGNAL_MSI", "MSIs"),
    (
        Cap::SetGuestDebug,
        "KVM_CAP_SET_GUEST_DEBUG",
        "single-stepping",
    ),
];

/// An open handle to the host's KVM, with its limits.
#[derive(Debug)]
pub struct KvmHost {
    kvm: Kvm,
    path: String,
}

/// What the host's KVM reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmInfo {
    /// The device node that was opened.
    pub path: String,
    /// `KVM_GET_API_VERSION`.
    pub api_version: i32,
    /// Recommended maximum vCPUs per VM (`KVM_CAP_NR_VCPUS`).
    pub recommended_vcpus: u32,
    /// Hard maximum vCPUs per VM (`KVM_CAP_MAX_VCPUS`).
    pub max_vcpus: u32,
    /// Maximum memory slots per VM (`KVM_CAP_NR_MEMSLOTS`).
    pub max_memslots: u32,
    /// Size of the mmap'd `kvm_run` area of each vCPU.
    pub vcpu_mmap_size: usize,
    /// The capabilities kvmkit uses that the host has, by KVM name (the required ones always).
    pub capabilities: Vec<&'static str>,
    /// The optional capabilities the host lacks, each with what cannot work without it.
    pub missing: Vec<(&'static str, &'static str)>,
}

impl KvmHost {
    /// Opens [`KVM_PATH`] and checks the API version and required capabilities.
    pub fn open() -> Result<Self> {
        Self::open_path(KVM_PATH)
    }

    /// Opens the KVM device at `path` and checks the API version and required capabilities.
    pub fn open_path(path: &str) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| match source.kind() {
                ErrorKind::NotFound => Error::KvmNotFound { path: path.into() },
                ErrorKind::PermissionDenied => Error::KvmPermissionDenied { path: path.into() },
                _ => Error::KvmOpen {
                    path: path.into(),
                    source,
                },
            })?;
        let fd = file.into_raw_fd();
        // SAFETY: `fd` was just opened by us and ownership is transferred to `Kvm`, which closes
        // it on drop; nothing else refers to it.
        let kvm = unsafe { Kvm::from_raw_fd(fd) };
        let host = KvmHost {
            kvm,
            path: path.into(),
        };
        host.check()?;
        Ok(host)
    }

    fn check(&self) -> Result<()> {
        let version = self.kvm.get_api_version();
        if version != KVM_API_VERSION {
            return Err(Error::KvmApiVersion {
                found: version,
                expected: KVM_API_VERSION,
            });
        }
        for (cap, name, why) in REQUIRED_CAPS {
            if !self.kvm.check_extension(*cap) {
                return Err(Error::MissingCapability { name, why });
            }
        }
        Ok(())
    }

    /// The underlying kvm-ioctls handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The CPUID features KVM can present to guests (`KVM_GET_SUPPORTED_CPUID`): the usual
    /// starting point for a vCPU's CPUID.
    pub fn supported_cpuid(&self) -> Result<kvm_bindings::CpuId> {
        self.kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))
    }

    /// Reports the API version and limits of the host's KVM.
    pub fn info(&self) -> Result<KvmInfo> {
        Ok(KvmInfo {
            path: self.path.clone(),
            api_version: self.kvm.get_api_version(),
            recommended_vcpus: u32::try_from(self.kvm.get_nr_vcpus()).unwrap_or(u32::MAX),
            max_vcpus: u32::try_from(self.kvm.get_max_vcpus()).unwrap_or(u32::MAX),
            max_memslots: u32::try_from(self.kvm.get_nr_memslots()).unwrap_or(u32::MAX),
            vcpu_mmap_size: self
                .kvm
                .get_vcpu_mmap_size()
                .map_err(Error::kvm("KVM_GET_VCPU_MMAP_SIZE"))?,
            capabilities: REQUIRED_CAPS
                .iter()
                .chain(OPTIONAL_CAPS)
                .filter(|(cap, ..)| self.kvm.check_extension(*cap))
                .map(|(_, name, _)| *name)
                .collect(),
            missing: OPTIONAL_CAPS
                .iter()
                .filter(|(cap, ..)| !self.kvm.check_extension(*cap))
                .map(|(_, name, what)| (*name, *what))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_kvm_not_found() {
        let err = KvmHost::open_path("/nonexistent/kvm").unwrap_err();
        assert_eq!(err.code(), "KVM_NOT_FOUND");
        assert!(err.to_string().contains("/nonexistent/kvm does not exist"));
    }

    #[test]
    fn non_kvm_device_fails_the_version_check() {
        // /dev/null opens read-write but answers no KVM ioctl.
        let err = KvmHost::open_path("/dev/null").unwrap_err();
        assert_eq!(err.code(), "KVM_API_VERSION");
    }
}
