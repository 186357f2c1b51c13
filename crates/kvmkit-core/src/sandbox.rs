//! An optional seccomp sandbox for vCPU threads, in Firecracker's model: before a vCPU
//! thread runs its guest it installs a filter that lets it make only the system calls its
//! run loop needs, so a guest that found a way to make the thread do something else (in a
//! device model, say) cannot open files, start processes or reach the network from it.
//!
//! The filter covers the vCPU thread only, from its first instruction of guest work to its
//! end: the thread that created the machine (Node's, in the binding) is not filtered, and
//! neither is an [`crate::vm::InlineVcpu`]'s caller, so a machine with a sandbox
//! cannot be started inline. What runs on a vCPU thread besides kvmkit's loop (an
//! [`crate::vm::ExitHandler`]'s callbacks) runs under the same filter.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::error::{Error, Result};
use crate::exit::{ExitKind, MachineError, Outcome};
use crate::vm::run::VcpuContext;

/// What happens when a sandboxed thread makes a system call the filter does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// The call fails with `EPERM` and the thread goes on: the code that made it sees an
    /// ordinary error.
    Fail,
    /// The kernel kills the whole process with `SIGSYS`, as Firecracker's default does.
    KillProcess,
}

/// The sandbox option of [`crate::vm::MachineOptions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sandbox {
    /// What a disallowed system call does.
    pub violation: Violation,
}

/// The ioctl type of every KVM ioctl (`KVMIO`), in bits 8-15 of the request number.
const KVMIO: u64 = 0xae << 8;
const IOCTL_TYPE_MASK: u64 = 0xff << 8;

/// What a vCPU thread may call besides KVM ioctls (checked with strace on the Rust tests
/// and the Node suite run sandboxed).
const VCPU_SYSCALLS: &[i64] = &[
    // Locks, condition variables, parking while a device answers.
    libc::SYS_futex,
    // The hand-off's waits: yielding to a partner on the same CPU, and finding which CPU
    // this thread runs on where the vDSO does not answer (see `handoff::spin`).
    libc::SYS_sched_yield,
    libc::SYS_getcpu,
    // Eventfds (irqfd lines, the binding's wake-ups to Node's event loop), stderr.
    libc::SYS_write,
    // Returning from the kick signal's handler.
    libc::SYS_rt_sigreturn,
    // Kicking the other vCPUs out of KVM_RUN when this one ends the run.
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
    // Exit latency, where the vDSO does not answer.
    libc::SYS_clock_gettime,
    // The allocator.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    // The thread's end: signal masking, its stacks released, exit.
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_exit,
];

impl Sandbox {
    /// The filter for vCPU threads, compiled to BPF.
    ///
    /// # Errors
    ///
    /// [`Error::Sandbox`] if seccompiler refuses the rules (a kvmkit bug).
    pub fn vcpu_filter(self) -> Result<BpfProgram> {
        let kvm_ioctls = SeccompCondition::new(
            1,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(IOCTL_TYPE_MASK),
            KVMIO,
        )
        .and_then(|c| SeccompRule::new(vec![c]))
        .map_err(sandbox_error)?;
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            VCPU_SYSCALLS.iter().map(|&nr| (nr, Vec::new())).collect();
        rules.insert(libc::SYS_ioctl, vec![kvm_ioctls]);
        let refused = match self.violation {
            Violation::Fail => SeccompAction::Errno(libc::EPERM as u32),
            Violation::KillProcess => SeccompAction::KillProcess,
        };
        let filter = SeccompFilter::new(rules, refused, SeccompAction::Allow, TargetArch::x86_64)
            .map_err(sandbox_error)?;
        filter.try_into().map_err(sandbox_error)
    }
}

fn sandbox_error(e: seccompiler::BackendError) -> Error {
    Error::Sandbox(e.to_string())
}

/// Installs `filter` on the calling thread, for good.
///
/// # Errors
///
/// [`Error::Sandbox`] if the kernel refuses it (no seccomp support).
pub fn confine(filter: &BpfProgram) -> Result<()> {
    seccompiler::apply_filter(filter).map_err(|e| Error::Sandbox(e.to_string()))
}

/// Confines the thread about to run `ctx`'s vCPU; if the kernel refuses, the run ends with
/// a `SANDBOX_FAILED` error before the guest runs unconfined.
pub(crate) fn confine_vcpu(filter: &BpfProgram, ctx: &VcpuContext) {
    if let Err(e) = confine(filter) {
        ctx.shared.end_with(Outcome::Error(MachineError {
            code: "SANDBOX_FAILED",
            message: format!("vCPU {}: {e}", ctx.index),
            vcpu: ctx.index,
            exit: ExitKind::Other,
            registers: None,
            instruction: Vec::new(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_actions_compile_to_a_filter() {
        for violation in [Violation::Fail, Violation::KillProcess] {
            let program = Sandbox { violation }.vcpu_filter().unwrap();
            assert!(program.len() > VCPU_SYSCALLS.len());
        }
    }
}
