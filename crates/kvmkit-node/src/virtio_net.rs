//! `NativeMachine::add_net` and the `NativeNet` class behind the façade's `NetDevice`:
//! transmitted frames announced under the device's MMIO base and taken in batches, frames
//! for the guest queued through `send`.

use kvmkit_core::virtio::net::{Backend, Net, NetConfig, NetHandle, Tap};
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
    handle: NetHandle,
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
        self.handle.send(&frame).map_err(core)
    }

    /// Takes the frames the guest transmitted so far.
    #[napi(catch_unwind)]
    pub fn take_frames(&self) -> Vec<Buffer> {
        self.handle
            .take_frames()
            .into_iter()
            .map(Buffer::from)
            .collect()
    }

    /// Its frame counts.
    #[napi(getter)]
    pub fn counters(&self) -> NativeNetCounters {
        let c = self.handle.counters();
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
    /// TAP interface `tap` or, without one, exchanging frames with the host.
    #[napi(catch_unwind)]
    pub fn add_net(&self, mac: Buffer, tap: Option<String>, mtu: Option<u32>) -> Result<NativeNet> {
        let mac: [u8; 6] = mac
            .as_ref()
            .try_into()
            .map_err(|_| invalid_arg("mac", "must be 6 bytes"))?;
        let mtu = mtu
            .map(u16::try_from)
            .transpose()
            .map_err(|_| invalid_arg("mtu", "must be at most 65535"))?;
        let backend = match tap {
            Some(name) => Backend::Tap(Tap::open(&name).map_err(|e| core(e.into()))?),
            None => Backend::Host,
        };
        let (device, handle) = Net::new(NetConfig { mac, mtu }, backend).map_err(core)?;
        let m = self.m()?;
        let info = m.add_virtio(Box::new(device)).map_err(core)?;
        handle.set_notify(m.output_notifier(announced_as(info.base)));
        Ok(NativeNet {
            handle,
            info: NativeVirtioInfo::of("virtio-net", &info),
        })
    }
}
