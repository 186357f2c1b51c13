//! A vCPU on a thread of its own, handing user-device accesses over through the hand-off.

use std::sync::Arc;

use super::VcpuContext;
use super::looper::{Looper, complete, register};

/// Runs vCPU `ctx.index` on the current thread until the machine stops or the vCPU halts,
/// handing user-device accesses over through the machine's [`crate::handoff::Handoff`].
pub(crate) fn run_threaded(ctx: VcpuContext) {
    let Some(mut looper) = Looper::new(ctx, false) else {
        return;
    };
    let shared = Arc::clone(&looper.ctx.shared);
    let index = looper.ctx.index;
    // A panic here must not leave the machine waiting for this vCPU forever.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Registered once for the whole run: a kick that lands while the thread waits in the
        // hand-off only makes its next KVM_RUN return at once, as an interruption.
        let _running = register(&shared, &looper);
        while looper.run_until_user() {
            let Looper {
                ctx,
                handler,
                exits,
                ..
            } = &mut looper;
            let answered = shared.handoff.exchange(
                index,
                &mut exits.access,
                handler.as_ref(),
                |access, answer| complete(ctx, access, &mut exits.reply, answer),
            );
            if !answered {
                break;
            }
        }
    }));
    if result.is_err() {
        looper.panicked();
    }
    looper.finish();
}
