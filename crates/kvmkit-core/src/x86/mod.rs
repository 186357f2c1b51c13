//! x86 platform setup done by the host before a vCPU first runs.

pub mod acpi;
pub mod bios;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mode;
pub mod mptable;
pub mod paging;
