//! Interrupting a vCPU thread that is inside `KVM_RUN`.
//!
//! A thread running a vCPU's loop registers in the machine's kick registry and publishes
//! the address of its `kvm_run.immediate_exit` in a thread-local. The kick signal's handler
//! sets it, so a kick that lands just before `KVM_RUN` makes the ioctl return at once, and
//! one that lands during it interrupts it with `EINTR`. Either way the thread gets back to
//! its loop and sees why it was kicked.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use libc::{c_int, c_void, pthread_t, siginfo_t};
use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

use crate::error::{Error, Result};

/// The kick signal is `SIGRTMIN() + KICK_SIGNAL_OFFSET`, a real-time signal nothing in Node
/// uses.
pub const KICK_SIGNAL_OFFSET: c_int = 6;

/// This thread's part in kicks: the `immediate_exit` byte it publishes while it runs a vCPU,
/// and its own `pthread_t`, kept here once known so that entering (on every exit of an
/// inline vCPU) needs no call into libc.
struct ThisThread {
    immediate_exit: Cell<*mut u8>,
    /// 0 until first needed (no thread has 0).
    handle: Cell<pthread_t>,
}

thread_local! {
    static THIS_THREAD: ThisThread = const {
        ThisThread {
            immediate_exit: Cell::new(std::ptr::null_mut()),
            handle: Cell::new(0),
        }
    };
}

extern "C" fn on_kick(_: c_int, _: *mut siginfo_t, _: *mut c_void) {
    let flag = THIS_THREAD.with(|t| t.immediate_exit.get());
    if !flag.is_null() {
        // SAFETY: the pointer was published by this very thread and points into its vCPU's
        // kvm_run mapping, which outlives the publication (see `KickRegistry::enter`).
        unsafe { flag.write_volatile(1) };
    }
}

/// The kick signal number.
pub fn kick_signal() -> c_int {
    SIGRTMIN() + KICK_SIGNAL_OFFSET
}

/// Installs the kick handler (once per process).
///
/// # Errors
///
/// `THREAD_FAILED` if the signal handler cannot be installed.
pub fn install() -> Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), i32>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| register_signal_handler(kick_signal(), on_kick).map_err(|e| e.errno()))
        .map_err(|errno| Error::Thread(std::io::Error::from_raw_os_error(errno)))
}

fn current_thread() -> pthread_t {
    // SAFETY: pthread_self has no preconditions and always succeeds.
    unsafe { libc::pthread_self() }
}

/// Which thread runs each vCPU's loop right now, so a stop or pause can kick it out of
/// `KVM_RUN`. Entering and leaving cost an atomic store each (an inline vCPU does both on
/// every exit); a kicker announces itself in `kicking` before it reads a thread handle, and a
/// leaving thread waits until no kicker is between reading and signalling, so a thread is
/// never signalled after it left (and may have exited).
pub(crate) struct KickRegistry {
    /// The `pthread_t` of the thread running each vCPU, 0 for none (no thread has 0).
    threads: Vec<AtomicU64>,
    kicking: AtomicUsize,
}

/// While alive, the current thread runs vCPU `index`'s loop and kicks reach it.
pub(crate) struct Running<'a> {
    registry: &'a KickRegistry,
    index: usize,
}

impl KickRegistry {
    /// A registry for `vcpus` vCPUs, none running.
    pub(crate) fn new(vcpus: usize) -> Self {
        KickRegistry {
            threads: (0..vcpus).map(|_| AtomicU64::new(0)).collect(),
            kicking: AtomicUsize::new(0),
        }
    }

    /// Registers the current thread as the one running vCPU `index`, whose `kvm_run`
    /// `immediate_exit` byte is at `immediate_exit`.
    ///
    /// # Safety
    ///
    /// `immediate_exit` must stay valid (the vCPU's `kvm_run` mapping alive) until the
    /// returned guard is dropped, and the guard must be dropped on this thread.
    pub(crate) unsafe fn enter(&self, index: usize, immediate_exit: *mut u8) -> Running<'_> {
        let me = THIS_THREAD.with(|t| {
            t.immediate_exit.set(immediate_exit);
            if t.handle.get() == 0 {
                t.handle.set(current_thread());
            }
            t.handle.get()
        });
        if let Some(slot) = self.threads.get(index) {
            slot.store(me, Ordering::SeqCst);
        }
        Running {
            registry: self,
            index,
        }
    }

    /// Interrupts every registered vCPU thread but the calling one.
    pub(crate) fn kick_others(&self) {
        let me = current_thread();
        // Announced before any handle is read: a thread leaving from now on waits for the
        // matching decrement before it goes on (see `Running::drop`), so each thread kicked
        // here is alive; a vCPU thread calling this is outside KVM_RUN.
        self.kicking.fetch_add(1, Ordering::SeqCst);
        for slot in &self.threads {
            let t = slot.load(Ordering::SeqCst);
            // SAFETY: pthread_equal only compares two thread handles.
            if t != 0 && unsafe { libc::pthread_equal(t, me) } == 0 {
                // SAFETY: `t` is alive (see above), and the signal has a handler installed
                // (see `install`) that only touches thread-local state.
                unsafe { libc::pthread_kill(t, kick_signal()) };
            }
        }
        self.kicking.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.registry.threads.get(self.index) {
            slot.store(0, Ordering::SeqCst);
            // A kicker that read this thread's handle before the store above announced
            // itself before reading it: wait until it has signalled (a few syscalls).
            while self.registry.kicking.load(Ordering::SeqCst) != 0 {
                std::hint::spin_loop();
            }
        }
        THIS_THREAD.with(|t| t.immediate_exit.set(std::ptr::null_mut()));
    }
}
