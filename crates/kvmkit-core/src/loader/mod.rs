//! Loading guest kernels into guest RAM and setting up the vCPU to enter them.

pub mod linux;
