//! A vCPU driven by its caller's thread, which answers accesses directly.

use super::VcpuContext;
use super::looper::{Looper, complete};
use crate::exit::DeviceAccess;
use crate::handoff::mailbox::Answer;

/// A vCPU driven by its caller's thread: each [`InlineVcpu::step`] runs the guest until the
/// next access to a user device and returns it, so the caller answers it directly, with no
/// hand-off to another thread.
pub struct InlineVcpu {
    looper: Option<Looper>,
    pending: bool,
}

/// The answer to the access an [`InlineVcpu`] returned.
#[derive(Debug)]
pub enum InlineAnswer<'a> {
    /// The bytes read (ignored for writes).
    Reply(&'a [u8]),
    /// The handler failed: the machine stops with this message.
    Fail(String),
}

impl std::fmt::Debug for InlineVcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineVcpu")
            .field("index", &self.looper.as_ref().map(|l| l.ctx.index))
            .field("pending", &self.pending)
            .finish()
    }
}

impl InlineVcpu {
    pub(crate) fn new(ctx: VcpuContext) -> Self {
        InlineVcpu {
            looper: Looper::new(ctx, true),
            pending: false,
        }
    }

    /// The access the last [`InlineVcpu::step`] returned, until it is answered.
    pub fn pending(&self) -> Option<&DeviceAccess> {
        self.looper
            .as_ref()
            .filter(|_| self.pending)
            .map(|l| &l.exits.access)
    }

    /// Answers the pending access (if any) with `answer` and runs the guest until the next
    /// user-device access, which it returns; `None` once this vCPU's run has ended.
    pub fn step(&mut self, answer: Option<InlineAnswer<'_>>) -> Option<&DeviceAccess> {
        let looper = self.looper.as_mut()?;
        let answered = match (std::mem::take(&mut self.pending), answer) {
            (false, _) => true,
            (true, Some(InlineAnswer::Fail(message))) => complete(
                &looper.ctx,
                &looper.exits.access,
                &mut looper.exits.reply,
                Answer::Failed(message),
            ),
            (true, Some(InlineAnswer::Reply(bytes))) => complete(
                &looper.ctx,
                &looper.exits.access,
                &mut looper.exits.reply,
                Answer::Replied(bytes),
            ),
            (true, None) => complete(
                &looper.ctx,
                &looper.exits.access,
                &mut looper.exits.reply,
                Answer::Replied(&[]),
            ),
        };
        // The loop registers this thread for kicks while it runs (see `run_until_user`).
        let go_on = answered
            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| looper.run_until_user()))
                .unwrap_or_else(|_| {
                    looper.panicked();
                    false
                });
        if go_on {
            self.pending = true;
            return self.looper.as_ref().map(|l| &l.exits.access);
        }
        if let Some(l) = self.looper.take() {
            l.finish();
        }
        None
    }
}

impl Drop for InlineVcpu {
    fn drop(&mut self) {
        if let Some(l) = self.looper.take() {
            l.ctx.shared.lifecycle.request_stop();
            l.finish();
        }
    }
}
