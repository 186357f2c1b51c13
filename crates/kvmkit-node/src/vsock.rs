//! virtio-vsock on `NativeMachine`: the device, and `NativeVsock`, the host's handle on it.
//! Connections reach JS as file descriptors of Unix sockets (`new net.Socket({ fd })`).

use std::os::fd::IntoRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kvmkit_core::virtio::vhost::{VhostError, VhostVsock};
use kvmkit_core::virtio::vsock::{Vsock, VsockHost};
use napi::bindgen_prelude::Function;
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi_derive::napi;

use crate::error::{Result, core, invalid_arg, napi};
use crate::machine::NativeMachine;
use crate::virtio::NativeVirtioInfo;

/// How a host connection to a guest port ended up.
#[napi(object)]
pub struct NativeVsockConnected {
    /// The host end's file descriptor, once the guest accepted.
    pub fd: Option<i32>,
    /// Why not, otherwise.
    pub error: Option<String>,
    /// Whether it failed because the guest did not answer in time.
    pub timed_out: bool,
}

/// The host side of a vsock device.
#[napi]
pub struct NativeVsock {
    /// `None` on vhost-vsock, whose host side is the kernel's `AF_VSOCK`.
    host: Option<VsockHost>,
    info: NativeVirtioInfo,
}

#[napi]
impl NativeMachine {
    /// Adds a virtio-vsock device giving the guest context ID `cid`, with Firecracker's
    /// Unix sockets at `uds` if given, or served by `/dev/vhost-vsock` with `vhost`.
    #[napi(catch_unwind)]
    pub fn add_vsock(
        &self,
        cid: u32,
        uds: Option<String>,
        vhost: Option<bool>,
    ) -> Result<NativeVsock> {
        let m = self.m()?;
        let (host, info) = if vhost == Some(true) {
            if uds.is_some() {
                return Err(invalid_arg(
                    "uds",
                    "vhost-vsock's host side is AF_VSOCK: give uds or vhost, not both",
                ));
            }
            let device = VhostVsock::open(u64::from(cid), m.ram().memory()).map_err(core)?;
            (None, m.add_virtio(Box::new(device)).map_err(core)?)
        } else {
            let device = Vsock::new(u64::from(cid), uds.as_deref().map(Path::new)).map_err(core)?;
            let host = device.host();
            (Some(host), m.add_virtio(Box::new(device)).map_err(core)?)
        };
        Ok(NativeVsock {
            host,
            info: NativeVirtioInfo::of("virtio-vsock", &info),
        })
    }
}

impl NativeVsock {
    /// kvmkit's host side, or why there is none.
    fn host(&self) -> Result<&VsockHost> {
        self.host.as_ref().ok_or_else(|| {
            core(
                VhostError::InKernel {
                    device: "virtio-vsock",
                    what: "its host side is the kernel's AF_VSOCK (connect to the guest's CID, or listen on CID 2 ports, with AF_VSOCK sockets); kvmkit's connect and listen need the device without `vhost`",
                }
                .into(),
            )
        })
    }
}

#[napi]
impl NativeVsock {
    /// Where the device sits.
    #[napi(getter)]
    pub fn info(&self) -> NativeVirtioInfo {
        self.info.clone()
    }

    /// Calls `on_connection` with the host end's file descriptor of each connection the guest
    /// opens to host port `port`.
    #[napi(catch_unwind)]
    pub fn listen(&self, port: u32, on_connection: Function<i32, ()>) -> Result<()> {
        let callback = on_connection
            .build_threadsafe_function()
            .callee_handled::<false>()
            .weak::<true>()
            .build()
            .map_err(napi)?;
        let accept = move |fd: std::os::fd::OwnedFd| {
            callback.call(fd.into_raw_fd(), ThreadsafeFunctionCallMode::NonBlocking);
        };
        self.host()?.listen(port, Arc::new(accept)).map_err(core)
    }

    /// Stops listening on `port`; returns whether it was listened on.
    #[napi]
    pub fn unlisten(&self, port: u32) -> bool {
        self.host.as_ref().is_some_and(|h| h.unlisten(port))
    }

    /// Connects to guest port `port`, waiting at most `timeout_ms` for the guest to answer;
    /// `done` hears how it went.
    #[napi(catch_unwind)]
    pub fn connect(
        &self,
        port: u32,
        timeout_ms: u32,
        done: Function<NativeVsockConnected, ()>,
    ) -> Result<()> {
        let callback = done
            .build_threadsafe_function()
            .callee_handled::<false>()
            .build()
            .map_err(napi)?;
        self.host()?
            .connect(
                port,
                Duration::from_millis(u64::from(timeout_ms)),
                Box::new(move |result| {
                    let outcome = match result {
                        Ok(fd) => NativeVsockConnected {
                            fd: Some(fd.into_raw_fd()),
                            error: None,
                            timed_out: false,
                        },
                        Err(e) => NativeVsockConnected {
                            fd: None,
                            timed_out: e.kind() == std::io::ErrorKind::TimedOut,
                            error: Some(e.to_string()),
                        },
                    };
                    callback.call(outcome, ThreadsafeFunctionCallMode::NonBlocking);
                }),
            )
            .map_err(core)
    }

    /// Stops every listener and resets every connection; later calls fail.
    #[napi]
    pub fn close(&self) {
        if let Some(host) = &self.host {
            host.close();
        }
    }
}
