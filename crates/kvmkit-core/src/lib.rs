//! kvmkit-core: a KVM virtual machine monitor library.
//!
//! It opens `/dev/kvm` ([`kvm::KvmHost`]), creates a VM with guest RAM and vCPUs
//! ([`vm::Machine`]), runs one thread per vCPU, answers exits with Rust devices on that
//! thread ([`bus::BusDevice`]) and hands the rest over through its [`handoff::Handoff`],
//! announced to an [`vm::ExitHandler`] — which the Node binding implements in
//! TypeScript. It has no Node dependency and is tested with `cargo test`.
//!
//! - [`vm`]: the machine, its lifecycle, the options chosen at creation, and its run loops
//!   (threaded and [`vm::InlineVcpu`]: exit routing, `kvm_run`, instructions KVM leaves
//!   unfinished);
//! - [`handoff`]: accesses and posted writes for user devices, and how each side waits;
//! - [`bus`], [`devices`], [`virtio`]: address routing, the built-in devices, virtio;
//!   [`epoch`]: the one counter a vCPU loop polls per exit for changes it must see;
//! - [`platform`], [`resources`], [`x86`]: what the guest is told about (ACPI, MP table),
//!   the address and interrupt allocator, the x86 specifics; [`loader`]: guest images.

pub mod bus;
pub mod config;
pub mod devices;
pub mod epoch;
pub mod error;
pub mod exit;
pub mod handoff;
pub mod irq;
pub mod kvm;
pub mod loader;
pub mod memory;
pub mod platform;
pub mod resources;
pub mod sandbox;
pub mod stats;
pub mod sync;
pub mod vcpu;
pub mod virtio;
pub mod vm;
pub mod x86;

pub use error::{Error, Result};
pub use kvm_bindings;
pub use vmm_sys_util;
