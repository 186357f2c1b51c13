//! Loading guest kernels into guest RAM and setting up the vCPU to enter them.

pub mod bzimage;
pub mod decompress;
pub mod flat;
pub mod linux;
pub mod multiboot;
