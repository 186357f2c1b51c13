//! Conversions between JS values and kvmkit-core types.

use kvmkit_core::kvm_bindings::kvm_regs;
use napi::bindgen_prelude::BigInt;
use napi_derive::napi;

use crate::error::{Result, invalid_arg};

/// A guest-physical address or size from JS, which must be a whole number below 2^53.
pub fn u64_from_js(field: &str, value: f64) -> Result<u64> {
    if value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= 9_007_199_254_740_991.0
    {
        Ok(value as u64)
    } else {
        Err(invalid_arg(
            field,
            format!("{value} is not a whole number from 0 to 2^53-1"),
        ))
    }
}

/// A 64-bit register value from a JS bigint, which must fit in 64 unsigned bits.
pub fn u64_from_bigint(field: &str, value: &BigInt) -> Result<u64> {
    let (negative, v, lossless) = value.get_u64();
    if negative || !lossless {
        return Err(invalid_arg(field, "must be a bigint from 0n to 2n**64n-1n"));
    }
    Ok(v)
}

/// The general registers, as bigints.
#[napi(object)]
pub struct Registers {
    pub rax: BigInt,
    pub rbx: BigInt,
    pub rcx: BigInt,
    pub rdx: BigInt,
    pub rsi: BigInt,
    pub rdi: BigInt,
    pub rsp: BigInt,
    pub rbp: BigInt,
    pub r8: BigInt,
    pub r9: BigInt,
    pub r10: BigInt,
    pub r11: BigInt,
    pub r12: BigInt,
    pub r13: BigInt,
    pub r14: BigInt,
    pub r15: BigInt,
    pub rip: BigInt,
    pub rflags: BigInt,
}

macro_rules! registers {
    ($($r:ident),*) => {
        impl From<kvm_regs> for Registers {
            fn from(r: kvm_regs) -> Self {
                Registers { $($r: BigInt::from(r.$r)),* }
            }
        }

        impl Registers {
            /// The registers as KVM takes them.
            pub fn to_kvm(&self) -> Result<kvm_regs> {
                Ok(kvm_regs { $($r: u64_from_bigint(concat!("registers.", stringify!($r)), &self.$r)?),* })
            }
        }
    };
}

registers!(
    rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15, rip, rflags
);
