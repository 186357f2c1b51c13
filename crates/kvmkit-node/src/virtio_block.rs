//! virtio-blk disks on `NativeMachine`: an image file (raw, read-only, or under a
//! copy-on-write overlay) served by the core on the I/O thread, or a disk served by JS —
//! requests reach it in batches through a threadsafe function (the I/O thread never waits
//! for JS) and come back through `NativeDisk.complete` from the JS thread.

use std::path::PathBuf;

use kvmkit_core::platform::VirtioMmioInfo;
use kvmkit_core::virtio::block::{
    Backend, Block, BlockOptions, Completer, External, ExternalKind, ExternalRequest, Overlay,
    OverlayFile, RawFile, Trims,
};
use napi::Status;
use napi::bindgen_prelude::Function;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use crate::convert::u64_from_js;
use crate::error::{Result, core, napi};
use crate::machine::NativeMachine;
use crate::virtio::NativeVirtioInfo;

/// A disk image to attach.
#[napi(object)]
pub struct NativeDiskFile {
    pub path: String,
    pub read_only: bool,
    /// Writes go to a copy-on-write overlay; the image is only read.
    pub overlay: bool,
    /// The overlay's file (a temporary file when absent).
    pub overlay_path: Option<String>,
    pub serial: Option<String>,
}

/// A disk served by JS.
#[napi(object)]
pub struct NativeServedDisk {
    /// Its size in bytes.
    pub size: f64,
    pub read_only: bool,
    pub serial: Option<String>,
    /// The server takes discard requests (offered only on a writable disk).
    pub discard: bool,
    /// The server takes write-zeroes requests (offered only on a writable disk).
    pub write_zeroes: bool,
}

/// A request for a disk served by JS. `buffers` holds (guest address, length) pairs, each
/// inside one RAM region (reads and writes); `sectors` is how many sectors it covers (0 for
/// a flush); `unmap` is a write-zeroes request's permission to free the space.
#[napi(object)]
pub struct NativeBlockRequest {
    pub id: f64,
    #[napi(ts_type = "'read' | 'write' | 'flush' | 'discard' | 'write-zeroes'")]
    pub kind: String,
    pub sector: f64,
    pub sectors: f64,
    pub unmap: bool,
    pub buffers: Vec<f64>,
}

type Requests =
    ThreadsafeFunction<Vec<NativeBlockRequest>, (), Vec<NativeBlockRequest>, Status, false, true>;

fn to_js(r: ExternalRequest) -> NativeBlockRequest {
    NativeBlockRequest {
        // Ids count up from 0 and sectors are below 2^55: both are exact in a double well
        // past any disk's life.
        id: r.id as f64,
        kind: match r.kind {
            ExternalKind::Read => "read",
            ExternalKind::Write => "write",
            ExternalKind::Flush => "flush",
            ExternalKind::Discard => "discard",
            ExternalKind::WriteZeroes { .. } => "write-zeroes",
        }
        .into(),
        sector: r.sector as f64,
        sectors: r.sectors as f64,
        unmap: matches!(r.kind, ExternalKind::WriteZeroes { unmap: true }),
        buffers: r
            .buffers
            .iter()
            .flat_map(|b| [b.addr as f64, f64::from(b.len)])
            .collect(),
    }
}

/// An attached disk.
#[napi]
pub struct NativeDisk {
    info: VirtioMmioInfo,
    size: u64,
    completer: Option<Completer>,
}

#[napi]
impl NativeDisk {
    /// Where the device sits.
    #[napi(getter)]
    pub fn info(&self) -> NativeVirtioInfo {
        NativeVirtioInfo::of("virtio-blk", &self.info)
    }

    /// The disk's size in bytes.
    #[napi(getter)]
    pub fn size(&self) -> f64 {
        self.size as f64
    }

    /// Completes request `id` of a disk served by JS (an unknown id is ignored: the driver
    /// reset the device since).
    #[napi(catch_unwind)]
    pub fn complete(&self, id: f64, ok: bool) -> Result<()> {
        let id = u64_from_js("id", id)?;
        if let Some(c) = &self.completer {
            c.complete(id, ok);
        }
        Ok(())
    }
}

impl NativeMachine {
    fn attach_disk(
        &self,
        backend: Backend,
        options: &BlockOptions,
        completer: Option<Completer>,
    ) -> Result<NativeDisk> {
        let block = Block::new(backend, options);
        let size = block.size();
        let info = self.m()?.add_virtio(Box::new(block)).map_err(core)?;
        Ok(NativeDisk {
            info,
            size,
            completer,
        })
    }
}

#[napi]
impl NativeMachine {
    /// Adds a virtio-blk disk on an image file.
    #[napi(catch_unwind)]
    pub fn add_disk_file(&self, disk: NativeDiskFile) -> Result<NativeDisk> {
        let path = PathBuf::from(&disk.path);
        let backend: Box<dyn kvmkit_core::virtio::block::DiskBackend> = if disk.overlay {
            let overlay = disk
                .overlay_path
                .map_or(OverlayFile::Temporary, |p| OverlayFile::Path(p.into()));
            Box::new(Overlay::open(&path, &overlay).map_err(core)?)
        } else {
            Box::new(RawFile::open(&path, disk.read_only).map_err(core)?)
        };
        let options = BlockOptions {
            read_only: disk.read_only,
            serial: disk.serial.unwrap_or_default(),
        };
        self.attach_disk(Backend::Sync(backend), &options, None)
    }

    /// Adds a virtio-blk disk served by `on_requests`, which receives batches of requests
    /// and completes each with `NativeDisk.complete`.
    #[napi(catch_unwind)]
    pub fn add_disk_served(
        &self,
        disk: NativeServedDisk,
        on_requests: Function<Vec<NativeBlockRequest>, ()>,
    ) -> Result<NativeDisk> {
        let size = u64_from_js("size", disk.size)?;
        let requests: Requests = on_requests
            .build_threadsafe_function()
            .callee_handled::<false>()
            // The disk does not keep Node alive: the running machine does.
            .weak::<true>()
            .build()
            .map_err(napi)?;
        let submit = Box::new(move |batch: Vec<ExternalRequest>| {
            let batch = batch.into_iter().map(to_js).collect();
            requests.call(batch, ThreadsafeFunctionCallMode::NonBlocking) == Status::Ok
        });
        let trims = Trims {
            discard: disk.discard,
            write_zeroes: disk.write_zeroes,
        };
        let (external, completer) = External::new(size, trims, submit).map_err(core)?;
        let options = BlockOptions {
            read_only: disk.read_only,
            serial: disk.serial.unwrap_or_default(),
        };
        self.attach_disk(Backend::External(external), &options, Some(completer))
    }
}
