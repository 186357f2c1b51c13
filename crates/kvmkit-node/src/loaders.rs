//! Loading guests: `NativeMachine.loadLinux`, `loadMultiboot`, `loadFlat` and their
//! results.

use std::path::Path;

use kvmkit_core::loader::flat::FlatBoot;
use kvmkit_core::loader::linux::{BzImageMode, LinuxBoot};
use kvmkit_core::loader::multiboot::{Module, MultibootBoot};
use napi_derive::napi;

use crate::convert::{mode, u64_from_js};
use crate::error::{Result, core};
use crate::machine::NativeMachine;

/// How to load a Linux kernel.
#[napi(object)]
pub struct NativeLinuxOptions {
    /// Enter a bzImage through its own decompressor instead of decompressing it on the host.
    pub standard_bzimage: bool,
    /// Where decompressed bzImage payloads are cached.
    pub cache_dir: Option<String>,
}

/// Where a Linux kernel was loaded and how it is entered.
#[napi(object)]
pub struct NativeLoadedKernel {
    /// `pvh`, `linux64` or `bzimage`.
    #[napi(ts_type = "'pvh' | 'linux64' | 'bzimage'")]
    pub protocol: String,
    pub entry: f64,
    pub kernel_end: f64,
    pub initrd_addr: Option<f64>,
    pub initrd_size: Option<f64>,
    /// The bzImage payload's compression, when the host decompressed it.
    #[napi(ts_type = "'gzip' | 'xz' | 'lzma' | 'lz4' | 'zstd'")]
    pub compression: Option<String>,
    /// Whether that decompressed kernel came from the cache.
    pub from_cache: Option<bool>,
}

/// A Multiboot module: a file and its string.
#[napi(object)]
pub struct NativeModule {
    pub path: String,
    pub cmdline: String,
}

/// Where a Multiboot kernel was loaded.
#[napi(object)]
pub struct NativeLoadedMultiboot {
    pub entry: f64,
    pub kernel_end: f64,
    /// Each module's start and end, in order.
    pub modules: Vec<Vec<f64>>,
}

#[napi]
impl NativeMachine {
    /// Loads a Linux kernel (ELF vmlinux or bzImage), optional initrd and command line, and
    /// sets vCPU 0 up to enter it.
    #[napi(catch_unwind)]
    pub fn load_linux(
        &self,
        kernel: String,
        initrd: Option<String>,
        cmdline: String,
        options: NativeLinuxOptions,
    ) -> Result<NativeLoadedKernel> {
        let boot = LinuxBoot {
            kernel: Path::new(&kernel),
            initrd: initrd.as_deref().map(Path::new),
            cmdline: &cmdline,
            bzimage: if options.standard_bzimage {
                BzImageMode::Standard
            } else {
                BzImageMode::Decompress
            },
            cache: options.cache_dir.as_deref().map(Path::new),
        };
        let loaded = self.m()?.load_linux(&boot).map_err(core)?;
        Ok(NativeLoadedKernel {
            protocol: loaded.protocol.name().into(),
            entry: loaded.entry as f64,
            kernel_end: loaded.kernel_end as f64,
            initrd_addr: loaded.initrd.map(|(a, _)| a as f64),
            initrd_size: loaded.initrd.map(|(_, s)| s as f64),
            compression: loaded.decompressed.map(|d| d.compression.name().into()),
            from_cache: loaded.decompressed.map(|d| d.from_cache),
        })
    }

    /// Loads a Multiboot (v1) kernel with its command line and modules, and sets vCPU 0 up
    /// to enter it.
    #[napi(catch_unwind)]
    pub fn load_multiboot(
        &self,
        kernel: String,
        cmdline: String,
        modules: Vec<NativeModule>,
    ) -> Result<NativeLoadedMultiboot> {
        let modules: Vec<Module<'_>> = modules
            .iter()
            .map(|m| Module {
                path: Path::new(&m.path),
                cmdline: &m.cmdline,
            })
            .collect();
        let boot = MultibootBoot {
            kernel: Path::new(&kernel),
            cmdline: &cmdline,
            modules: &modules,
        };
        let loaded = self.m()?.load_multiboot(&boot).map_err(core)?;
        Ok(NativeLoadedMultiboot {
            entry: loaded.entry as f64,
            kernel_end: loaded.kernel_end as f64,
            modules: loaded
                .modules
                .iter()
                .map(|&(start, end)| vec![start as f64, end as f64])
                .collect(),
        })
    }

    /// Loads flat binary `path` at `address` and sets vCPU 0 up to enter it at `entry` in
    /// `mode_name`; returns where it ends.
    #[napi(catch_unwind)]
    pub fn load_flat(
        &self,
        path: String,
        address: f64,
        entry: f64,
        #[napi(ts_arg_type = "'real' | 'protected' | 'long'")] mode_name: String,
        stack: f64,
    ) -> Result<f64> {
        let boot = FlatBoot {
            path: Path::new(&path),
            address: u64_from_js("address", address)?,
            entry: Some(u64_from_js("entry", entry)?),
            mode: mode(&mode_name)?,
            stack: u64_from_js("stack", stack)?,
        };
        let end = self.m()?.load_flat(&boot).map_err(core)?;
        Ok(end as f64)
    }
}
