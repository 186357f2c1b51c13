//! `NativeMachine::add_net` and the `NativeNet` class behind the façade's `NetDevice`:
//! transmitted frames announced under the device's MMIO base and taken in batches, frames
//! for the guest queued through `send`.

use kvmkit_core::virtio::net::{Backend, Net, NetConfig, NetHandle, Tap};
use kvmkit_core::virtio::vhost::{VhostError, VhostNet};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::error::{Result, core, invalid_arg};
use crate::machine::NativeMachine;
use crate::virtio::{NativeVirtioInfo, announced_as};

/// A network device's frame counts.
#[napi(object)]
pub struct NativeNetCounters {
    pub rx_frames: f64,
    pub rx_dropped: f64,
    pub tx_frames: f64,
    pub tx_dropped: f64,
}

/// A network device's host side.
#[napi]
pub struct NativeNet {
    /// `None` on vhost-net, where the kernel moves the frames.
    handle: Option<NetHandle>,
    info: NativeVirtioInfo,
}

#[napi]
impl NativeNet {
    /// Where it was attached (its transmitted frames are announced under `base`).
    #[napi(getter)]
    pub fn info(&self) -> NativeVirtioInfo {
        self.info.clone()
    }

    /// Queues `frame` for the guest; returns whether there was room.
    #[napi(catch_unwind)]
    pub fn send(&self, frame: Buffer) -> Result<bool> {
        let Some(handle) = &self.handle else {
            return Err(core(
                VhostError::InKernel {
                    device: "virtio-net",
                    what: "the kernel moves its frames between the guest and the TAP; send frames into the TAP instead, or drop `vhost`",
                }
                .into(),
            ));
        };
        handle.send(&frame).map_err(core)
    }

    /// Takes the frames the guest transmitted so far.
    #[napi(catch_unwind)]
    pub fn take_frames(&self) -> Vec<Buffer> {
        self.handle
            .as_ref()
            .map(NetHandle::take_frames)
            .unwrap_or_default()
            .into_iter()
            .map(Buffer::from)
            .collect()
    }

    /// Its frame counts.
    #[napi(getter)]
    pub fn counters(&self) -> NativeNetCounters {
        let c = self
            .handle
            .as_ref()
            .map(NetHandle::counters)
            .unwrap_or_default();
        NativeNetCounters {
            rx_frames: c.rx_frames as f64,
            rx_dropped: c.rx_dropped as f64,
            tx_frames: c.tx_frames as f64,
            tx_dropped: c.tx_dropped as f64,
        }
    }
}

#[napi]
impl NativeMachine {
    /// Adds a virtio network device with MAC `mac` (6 bytes) and, if given, MTU `mtu`, on
    /// TAP interface `tap` or, without one, exchanging frames with the host; with `vhost`,
    /// `/dev/vhost-net` serves its queues (a TAP is needed then).
    #[napi(catch_unwind)]
    pub fn add_net(
        &self,
        mac: Buffer,
        tap: Option<String>,
        mtu: Option<u32>,
        vhost: Option<bool>,
    ) -> Result<NativeNet> {
        let mac: [u8; 6] = mac
            .as_ref()
            .try_into()
            .map_err(|_| invalid_arg("mac", "must be 6 bytes"))?;
        let mtu = mtu
            .map(u16::try_from)
            .transpose()
            .map_err(|_| invalid_arg("mtu", "must be at most 65535"))?;
        let config = NetConfig { mac, mtu };
        let tap = tap
            .map(|name| Tap::open(&name).map_err(|e| core(e.into())))
            .transpose()?;
        let m = self.m()?;
        if vhost == Some(true) {
            let tap = tap.ok_or_else(|| invalid_arg("vhost", "vhost-net needs a TAP"))?;
            let device = VhostNet::open(config, tap, m.ram().memory()).map_err(core)?;
            let info = m.add_virtio(Box::new(device)).map_err(core)?;
            return Ok(NativeNet {
                handle: None,
                info: NativeVirtioInfo::of("virtio-net", &info),
            });
        }
        let backend = tap.map_or(Backend::Host, Backend::Tap);
        let (device, handle) = Net::new(config, backend).map_err(core)?;
        let info = m.add_virtio(Box::new(device)).map_err(core)?;
        handle.set_notify(m.output_notifier(announced_as(info.base)));
        Ok(NativeNet {
            handle: Some(handle),
            info: NativeVirtioInfo::of("virtio-net", &info),
        })
    }
}
