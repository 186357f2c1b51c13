//! kvmkit-core: a KVM virtual machine monitor library.
//!
//! It opens `/dev/kvm` ([`kvm::KvmHost`]), creates a VM with guest RAM and vCPUs
//! ([`machine::Machine`]), runs one thread per vCPU, answers exits with Rust devices on that
//! thread ([`bus::BusDevice`]) and hands the rest over through its [`handoff::Handoff`],
//! announced to an [`handler::ExitHandler`] — which the Node binding implements in
//! TypeScript. It has no Node dependency and is tested with `cargo test`.
//!
//! - [`machine`]: the machine and its [`lifecycle`]; [`options`] chosen at creation;
//! - `run`: the vCPU run loops (threaded and [`machine::InlineVcpu`]), exit routing, `kvm_run`;
//! - [`handoff`]: accesses and posted writes for user devices, and how each side waits;
//! - [`bus`], [`devices`]: address routing and the built-in devices.

pub mod bus;
pub mod config;
pub mod devices;
pub mod error;
pub mod exit;
pub mod fallback;
pub mod handler;
pub mod handoff;
pub mod irq;
pub mod kick;
pub mod kvm;
pub mod lifecycle;
pub mod loader;
pub mod machine;
pub mod memory;
pub mod options;
pub mod platform;
pub mod resources;
mod run;
pub mod sandbox;
pub mod stats;
pub mod sync;
pub mod vcpu;
pub mod virtio;
pub mod x86;

pub use error::{Error, Result};
pub use kvm_bindings;
pub use vmm_sys_util;
