//! Interrupting a vCPU thread that is inside `KVM_RUN`.
//!
//! Each vCPU thread publishes the address of its `kvm_run.immediate_exit` in a thread-local.
//! The kick signal's handler sets it, so a kick that lands just before `KVM_RUN` makes the
//! ioctl return at once, and one that lands during it interrupts it with `EINTR`. Either way
//! the thread gets back to its loop and sees why it was kicked.

use std::cell::Cell;
use std::sync::OnceLock;

use libc::{c_int, c_void, pthread_t, siginfo_t};
use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

use crate::error::{Error, Result};

/// The kick signal is `SIGRTMIN() + KICK_SIGNAL_OFFSET`, a real-time signal nothing in Node
/// uses.
pub const KICK_SIGNAL_OFFSET: c_int = 6;

thread_local! {
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_: c_int, _: *mut siginfo_t, _: *mut c_void) {
    let flag = IMMEDIATE_EXIT.with(Cell::get);
    if !flag.is_null() {
        // SAFETY: the pointer was published by this very thread and points into its vCPU's
        // kvm_run mapping, which outlives the publication (see `publish`).
        unsafe { flag.write_volatile(1) };
    }
}

/// The kick signal number.
pub fn kick_signal() -> c_int {
    SIGRTMIN() + KICK_SIGNAL_OFFSET
}

/// Installs the kick handler (once per process).
pub fn install() -> Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), i32>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| register_signal_handler(kick_signal(), on_kick).map_err(|e| e.errno()))
        .map_err(|errno| Error::Thread(std::io::Error::from_raw_os_error(errno)))
}

/// Publishes the current thread's `immediate_exit` flag; `None` withdraws it.
///
/// The caller must withdraw it before the `kvm_run` mapping it points into is unmapped.
pub fn publish(flag: Option<*mut u8>) {
    IMMEDIATE_EXIT.with(|c| c.set(flag.unwrap_or(std::ptr::null_mut())));
}

/// The calling thread's handle, for [`kick`].
pub fn current_thread() -> pthread_t {
    // SAFETY: pthread_self has no preconditions and always succeeds.
    unsafe { libc::pthread_self() }
}

/// Sends the kick signal to `thread`, which must be alive: callers keep a registry that
/// threads leave before they exit, and kick under its lock.
pub fn kick(thread: pthread_t) {
    // SAFETY: per the contract above `thread` is a live thread of this process, and the
    // signal has a handler installed (see `install`) that only touches thread-local state.
    unsafe { libc::pthread_kill(thread, kick_signal()) };
}
