//! kvmkit-core: a KVM virtual machine monitor library.
//!
//! It opens `/dev/kvm` ([`kvm::KvmHost`]), creates a VM with guest RAM and vCPUs
//! ([`machine::Machine`]), runs one thread per vCPU, answers exits with Rust devices on that
//! thread ([`bus::BusDevice`]) and hands the rest to an [`machine::ExitHandler`] — which the
//! Node binding implements in TypeScript. It has no Node dependency and is tested with
//! `cargo test`.

pub mod bus;
pub mod config;
pub mod devices;
pub mod error;
pub mod exit;
pub mod fallback;
pub mod irq;
pub mod kick;
pub mod kvm;
pub mod loader;
pub mod machine;
pub mod mailbox;
pub mod memory;
pub mod platform;
pub mod posted;
pub mod resources;
mod runner;
pub mod sandbox;
pub mod stats;
pub mod vcpu;
pub mod x86;

pub use error::{Error, Result};
pub use kvm_bindings;
pub use vmm_sys_util;
