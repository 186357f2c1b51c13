//! The kernel loaders, driven for real: a stand-in Linux kernel (guests/linux64.S) booted
//! as an ELF vmlinux, from bzImages built here around it (its payload compressed in each
//! format the kernel supports, and the standard 64-bit entry), and a Multiboot kernel
//! (guests/multiboot.S) — and the errors bad images get.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kvmkit_core::bus::{Route, Space};
use kvmkit_core::config::{MachineConfig, MemoryRegionConfig};
use kvmkit_core::devices::DeviceSpec;
use kvmkit_core::devices::output::ConsoleOutput;
use kvmkit_core::devices::serial::SerialHandle;
use kvmkit_core::error::Error;
use kvmkit_core::exit::{Outcome, SystemEvent};
use kvmkit_core::loader::bzimage::{Header, KernelCache};
use kvmkit_core::loader::decompress::{Compression, DecompressError, decompress};
use kvmkit_core::loader::linux::{BootProtocol, BzImageMode, LinuxBoot};
use kvmkit_core::loader::multiboot::{Module, MultibootBoot};
use kvmkit_core::vm::{Machine, MachineOptions};

use common::{Event, end, host, next, start};

const MIB: u64 = 1 << 20;

fn guest(name: &str) -> Vec<u8> {
    std::fs::read(format!("../../guests/build/{name}"))
        .unwrap_or_else(|e| panic!("build the guests first (make -C guests): {name}: {e}"))
}

/// A scratch directory for this test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvmkit-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

/// A machine with `mib` MiB of RAM, the debug console, the debug-exit port and COM1; the
/// output of the debug console (the Multiboot kernel's) or of COM1 (the stand-in Linux's).
fn machine(mib: u64) -> Option<(Machine, Output)> {
    let config = MachineConfig {
        memory: vec![MemoryRegionConfig {
            guest_addr: 0,
            size: mib * MIB,
        }],
        vcpus: 1,
    };
    let m = Machine::new(host()?, &config, MachineOptions::default()).unwrap();
    let console = m.add(DeviceSpec::DebugConsole { port: 0xe9 }).unwrap();
    m.add(DeviceSpec::DebugExit { port: 0xf4 }).unwrap();
    let serial = m
        .add(DeviceSpec::Serial {
            port: 0x3f8,
            irq: None,
        })
        .unwrap();
    let (console, serial) = (console.into_console()?, serial.into_serial()?);
    Some((m, Output { console, serial }))
}

/// Where the guests print.
struct Output {
    console: Arc<Mutex<ConsoleOutput>>,
    serial: SerialHandle,
}

fn run(m: &Machine, output: &Output) -> (Outcome, String) {
    let outcome = end(&start(m));
    let mut text = output.console.lock().unwrap().take();
    text.extend(output.serial.take_output());
    (outcome, String::from_utf8(text).unwrap())
}

fn powered_off() -> Outcome {
    Outcome::SystemEvent {
        event: SystemEvent::Shutdown,
        vcpu: 0,
    }
}

fn linux<'a>(kernel: &'a Path, cmdline: &'a str, cache: Option<&'a Path>) -> LinuxBoot<'a> {
    LinuxBoot {
        kernel,
        initrd: None,
        cmdline,
        bzimage: BzImageMode::Decompress,
        cache,
    }
}

// The payload encoders, each as the kernel's build does it (then the size is appended).

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut options = lzma_rust2::XzOptions::with_preset(6);
    options.prepend_pre_filter(lzma_rust2::FilterType::BcjX86, 0);
    let mut w = lzma_rust2::XzWriter::new(Vec::new(), options).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

fn lzma(data: &[u8]) -> Vec<u8> {
    let options = lzma_rust2::LzmaOptions::with_preset(6);
    let mut w = lzma_rust2::LzmaWriter::new(Vec::new(), &options, true, true, None).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

/// Legacy lz4 frames, as `lz4 -l`: the magic, then blocks of up to 8 MiB.
fn lz4(data: &[u8]) -> Vec<u8> {
    let mut out = 0x184c_2102u32.to_le_bytes().to_vec();
    for chunk in data.chunks(8 << 20) {
        let block = lz4_flex::block::compress(chunk);
        out.extend_from_slice(&(block.len() as u32).to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

type Encoder = fn(&[u8]) -> Vec<u8>;
const ENCODERS: [(Compression, Encoder); 5] = [
    (Compression::Gzip, gzip),
    (Compression::Xz, xz),
    (Compression::Lzma, lzma),
    (Compression::Lz4, lz4),
    (Compression::Zstd, zstd),
];

fn payload(encode: Encoder, data: &[u8]) -> Vec<u8> {
    let mut p = encode(data);
    p.extend_from_slice(&(data.len() as u32).to_le_bytes());
    p
}

/// A bzImage (boot protocol 2.15, one setup sector) whose protected-mode kernel is
/// `kernel`, with a payload of `payload_len` bytes at `payload_at` in it.
fn bzimage(kernel: &[u8], payload_at: usize, payload_len: usize) -> Vec<u8> {
    let mut image = vec![0u8; 1024];
    let mut put = |at: usize, bytes: &[u8]| image[at..at + bytes.len()].copy_from_slice(bytes);
    put(0x1f1, &[1]); // setup_sects
    put(0x1f4, &(kernel.len().div_ceil(16) as u32).to_le_bytes()); // syssize
    put(0x1fe, &0xaa55u16.to_le_bytes()); // boot_flag
    put(0x202, b"HdrS");
    put(0x206, &0x020fu16.to_le_bytes()); // version
    put(0x211, &[1]); // loadflags: LOADED_HIGH
    put(0x214, &0x10_0000u32.to_le_bytes()); // code32_start
    put(0x22c, &0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    put(0x234, &[1]); // relocatable_kernel
    put(0x236, &1u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    put(0x238, &0x7ffu32.to_le_bytes()); // cmdline_size
    put(0x248, &(payload_at as u32).to_le_bytes());
    put(0x24c, &(payload_len as u32).to_le_bytes());
    put(0x258, &0x100_0000u64.to_le_bytes()); // pref_address
    put(0x260, &0x10_0000u32.to_le_bytes()); // init_size
    image.extend_from_slice(kernel);
    image.resize(1024 + kernel.len().div_ceil(16) * 16, 0);
    image
}

/// A bzImage whose protected-mode kernel is `entry64` at the 64-bit entry (offset 0x200),
/// followed by `payload`.
fn bzimage_around(entry64: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut kernel = vec![0xf4u8; 0x200]; // hlt where the 32-bit entry would be
    kernel.extend_from_slice(entry64);
    let at = kernel.len();
    kernel.extend_from_slice(payload);
    bzimage(&kernel, at, payload.len())
}

#[test]
fn an_elf_vmlinux_gets_the_zero_page_command_line_memory_map_and_acpi() {
    let dir = scratch("elf");
    let kernel = file(&dir, "vmlinux", &guest("linux64.elf"));
    let Some((m, console)) = machine(32) else {
        return;
    };
    let loaded = m
        .load_linux(&linux(&kernel, "root=/dev/null quiet", None))
        .unwrap();
    assert_eq!(loaded.protocol, BootProtocol::Linux64);
    assert_eq!(loaded.entry, 0x100_0000);
    assert_eq!(loaded.decompressed, None);
    // Two e820 entries: RAM below the BIOS area, the BIOS area, RAM above 1 MiB.
    assert_eq!(
        run(&m, &console),
        (powered_off(), "root=/dev/null quiet 3".into())
    );
}

#[test]
fn a_power_off_ends_the_run_while_another_vcpu_waits_for_its_startup_ipi() {
    let dir = scratch("smp-power-off");
    let kernel = file(&dir, "vmlinux", &guest("linux64.elf"));
    let config = MachineConfig {
        memory: vec![MemoryRegionConfig {
            guest_addr: 0,
            size: 32 * MIB,
        }],
        vcpus: 2,
    };
    let options = MachineOptions {
        irqchip: true,
        ..Default::default()
    };
    let Some(host) = host() else {
        return;
    };
    let m = Machine::new(host, &config, options).unwrap();
    // COM1 goes to the test, so vCPU 0 waits at its first byte.
    let com1 = Route::User {
        device: 1,
        posted: false,
    };
    m.add_device(Space::Port, 0x3f8, 8, "com1", com1).unwrap();
    m.load_linux(&linux(&kernel, "smp", None)).unwrap();
    let rx = start(&m);
    let Event::Access(0, _) = next(&rx) else {
        panic!("expected vCPU 0's first byte");
    };
    // vCPU 1 holds its state while inside its loop: once it does, it is in KVM_RUN, waiting
    // for an INIT/SIPI that never comes.
    while m.with_vcpu(1, |_| Ok(())).is_ok() {
        std::thread::yield_now();
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    m.handoff().reply(0, &[]).unwrap();
    for _ in 1.."smp 3".len() {
        let Event::Access(0, _) = next(&rx) else {
            panic!("expected the rest of the command line");
        };
        m.handoff().reply(0, &[]).unwrap();
    }
    assert_eq!(end(&rx), powered_off());
}

#[test]
fn every_payload_compression_is_decompressed_on_the_host_and_booted() {
    let dir = scratch("compressions");
    let vmlinux = guest("linux64.elf");
    for (compression, encode) in ENCODERS {
        let image = bzimage_around(&[0xf4], &payload(encode, &vmlinux));
        let kernel = file(&dir, &format!("bzImage-{}", compression.name()), &image);
        let Some((m, console)) = machine(32) else {
            return;
        };
        let loaded = m
            .load_linux(&linux(&kernel, compression.name(), None))
            .unwrap();
        assert_eq!(loaded.protocol, BootProtocol::Linux64, "{compression:?}");
        let how = loaded.decompressed.unwrap();
        assert_eq!(how.compression, compression);
        assert!(!how.from_cache);
        assert_eq!(
            run(&m, &console),
            (powered_off(), format!("{} 3", compression.name()))
        );
    }
}

#[test]
fn the_standard_path_enters_the_bzimage_at_its_64_bit_entry() {
    let dir = scratch("standard");
    let image = bzimage_around(&guest("linux64.bin"), &payload(gzip, b"\x7fELF unused"));
    let kernel = file(&dir, "bzImage", &image);
    let Some((m, console)) = machine(64) else {
        return;
    };
    let boot = LinuxBoot {
        bzimage: BzImageMode::Standard,
        ..linux(&kernel, "console=ttyS0", None)
    };
    let loaded = m.load_linux(&boot).unwrap();
    assert_eq!(loaded.protocol, BootProtocol::BzImage);
    assert_eq!(loaded.entry, 0x10_0200);
    assert_eq!(loaded.decompressed, None);
    // The room the kernel needs to decompress itself: pref_address + init_size.
    assert_eq!(loaded.kernel_end, 0x110_0000);
    assert_eq!(run(&m, &console), (powered_off(), "console=ttyS0 3".into()));
}

#[test]
fn a_decompressed_kernel_is_cached_by_image_and_a_damaged_entry_replaced() {
    let dir = scratch("cache");
    let image = bzimage_around(&[0xf4], &payload(zstd, &guest("linux64.elf")));
    let kernel = file(&dir, "bzImage", &image);
    let cache_dir = dir.join("cache");
    let from_cache = |expected: bool| {
        let Some((m, console)) = machine(32) else {
            return;
        };
        let loaded = m
            .load_linux(&linux(&kernel, "cached", Some(&cache_dir)))
            .unwrap();
        assert_eq!(loaded.decompressed.unwrap().from_cache, expected);
        assert_eq!(run(&m, &console), (powered_off(), "cached 3".into()));
    };
    from_cache(false);
    let entry = KernelCache::new(&cache_dir).entry(&image);
    assert_eq!(std::fs::read(&entry).unwrap(), guest("linux64.elf"));
    from_cache(true);
    std::fs::write(&entry, b"damaged").unwrap();
    from_cache(false);
    from_cache(true);
    // A cut-short entry (an ELF, but not the size the image records) is replaced too.
    let cached = std::fs::read(&entry).unwrap();
    std::fs::write(&entry, &cached[..cached.len() / 2]).unwrap();
    from_cache(false);
    from_cache(true);
}

fn load_error(m: &Machine, boot: &LinuxBoot<'_>) -> String {
    match m.load_linux(boot).unwrap_err() {
        e @ Error::Image { .. } => {
            assert_eq!(e.code(), "BAD_IMAGE");
            e.to_string()
        }
        other => panic!("not an image error: {other:?}"),
    }
}

#[test]
fn a_kernel_too_big_for_guest_ram_says_how_much_it_needs() {
    let dir = scratch("too-big");
    // The stand-in kernel loads at 0xfff000, just below 16 MiB.
    let kernel = file(&dir, "vmlinux", &guest("linux64.elf"));
    let bz = file(
        &dir,
        "bzimage",
        &bzimage_around(&[0xf4], &payload(gzip, &guest("linux64.elf"))),
    );
    let Some((m, _)) = machine(8) else {
        return;
    };
    for path in [&kernel, &bz] {
        let message = load_error(&m, &linux(path, "", None));
        assert!(message.contains("does not fit in guest RAM"), "{message}");
        assert!(message.contains("the machine has 8 MiB"), "{message}");
    }
}

#[test]
fn bad_images_are_named_and_leave_guest_ram_untouched() {
    let dir = scratch("bad");
    let vmlinux = guest("linux64.elf");
    let good = bzimage_around(&[0xf4], &payload(gzip, &vmlinux));
    let Some((m, _)) = machine(32) else {
        return;
    };
    let mut corrupt_payload = good.clone();
    let middle = 1024 + 0x200 + 1 + 20;
    corrupt_payload[middle] ^= 0xff;
    let mut aarch64 = vmlinux.clone();
    aarch64[18] = 183;
    // The payload follows the one-byte entry at 0x200 of the kernel, after 1 KiB of setup.
    let mut lying_size = good.clone();
    let size_at = 1024 + 0x201 + payload(gzip, &vmlinux).len() - 4;
    lying_size[size_at..size_at + 4].copy_from_slice(&7u32.to_le_bytes());
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "truncated: the header says",
        ),
        (
            "corrupt",
            corrupt_payload,
            "gzip payload is corrupt or truncated",
        ),
        ("lying", lying_size, "decompressed to"),
        ("aarch64", aarch64, "wrong architecture: ELF machine 183"),
        (
            "text",
            b"#!/bin/sh\necho hello\n".to_vec(),
            "neither an ELF vmlinux nor a bzImage",
        ),
        (
            "empty-payload",
            bzimage_around(&[0xf4], &payload(gzip, b"")),
            "its payload",
        ),
    ];
    for (name, data, expected) in cases {
        let path = file(&dir, name, &data);
        let message = load_error(&m, &linux(&path, "", None));
        assert!(
            message.starts_with(&format!("kernel {}: ", path.display())),
            "{message}"
        );
        assert!(message.contains(expected), "{name}: {message}");
    }
    let missing = dir.join("missing");
    assert!(load_error(&m, &linux(&missing, "", None)).contains("no such file: check the path"));
    let text = file(&dir, "script", b"#!/bin/sh\necho hello\n");
    assert!(
        load_error(&m, &linux(&text, "", None)).contains("it is text, starting \"#!/bin/sh"),
        "a text file is said to be text"
    );
    let kernel = file(&dir, "vmlinux", &vmlinux);
    let empty = file(&dir, "empty", b"");
    let boot = LinuxBoot {
        initrd: Some(&empty),
        ..linux(&kernel, "", None)
    };
    assert!(
        load_error(&m, &boot)
            .starts_with(&format!("initrd {}: the file is empty", empty.display()))
    );
    // Nothing of any of them reached guest RAM.
    let mut ram = vec![0u8; 64];
    for addr in [0x10_0000, 0x100_0000, 0xe_0000] {
        m.ram().read(addr, &mut ram).unwrap();
        assert!(ram.iter().all(|&b| b == 0), "RAM at {addr:#x} was written");
    }
}

#[test]
fn the_initrd_goes_high_and_page_aligned_past_the_kernel_or_is_refused() {
    let dir = scratch("initrd");
    let kernel = file(&dir, "vmlinux", &guest("linux64.elf"));
    let initrd = file(&dir, "initrd", &[0x5a; 300_000]);
    let huge = file(&dir, "huge", &vec![0u8; 40 << 20]);
    let Some((m, _)) = machine(32) else {
        return;
    };
    let boot = LinuxBoot {
        initrd: Some(&initrd),
        ..linux(&kernel, "", None)
    };
    let loaded = m.load_linux(&boot).unwrap();
    let (addr, size) = loaded.initrd.unwrap();
    assert_eq!(size, 300_000);
    assert_eq!(addr % 4096, 0);
    assert!(
        addr >= loaded.kernel_end && addr + size <= 32 * MIB,
        "{addr:#x}"
    );
    assert!(addr + size > 31 * MIB, "as high as it goes");
    let mut first = [0u8; 4];
    m.ram().read(addr, &mut first).unwrap();
    assert_eq!(first, [0x5a; 4]);
    let boot = LinuxBoot {
        initrd: Some(&huge),
        ..linux(&kernel, "", None)
    };
    let message = load_error(&m, &boot);
    assert!(
        message.starts_with(&format!(
            "initrd {}: 41943040 bytes do not fit",
            huge.display()
        )),
        "{message}"
    );
}

#[test]
fn each_format_refuses_corrupt_and_truncated_data() {
    let data: Vec<u8> = (0..100_000u32)
        .flat_map(|i| (i / 7).to_le_bytes())
        .collect();
    for (compression, encode) in ENCODERS {
        let packed = encode(&data);
        let size = (data.len() as u32).to_le_bytes();
        let truncated = [&packed[..packed.len() / 2], &size[..]].concat();
        assert!(
            matches!(
                decompress(&truncated, 1 << 30),
                Err(DecompressError::Corrupt { .. } | DecompressError::WrongSize { .. })
            ),
            "{compression:?} truncated"
        );
        let (found, out) = decompress(&[&packed[..], &size[..]].concat(), 1 << 30).unwrap();
        assert_eq!((found, out.len()), (compression, data.len()));
        let short = (data.len() as u32 - 1).to_le_bytes();
        assert!(
            matches!(
                decompress(&[&packed[..], &short[..]].concat(), 1 << 30),
                Err(DecompressError::WrongSize { .. })
            ),
            "{compression:?} with a size one short"
        );
    }
}

#[test]
fn header_checks_name_what_is_wrong() {
    let good = bzimage_around(&[0xf4], &payload(gzip, b"\x7fELF"));
    let header = Header::parse(&good).unwrap();
    assert_eq!(header.kernel_offset, 1024);
    assert_eq!(header.compression(&good), Some(Compression::Gzip));
    let err = |at: usize, value: u8| {
        let mut bad = good.clone();
        bad[at] = value;
        Header::parse(&bad).unwrap_err()
    };
    assert!(err(0x1fe, 0).starts_with("not a bzImage"));
    assert!(err(0x236, 0).starts_with("wrong architecture: a 32-bit kernel"));
    assert!(err(0x206, 0x0a).contains("older than 2.12"));
    assert!(err(0x211, 0).contains("zImage"));
    assert!(err(0x24d, 0xff).contains("outside the protected-mode kernel"));
}

#[test]
fn a_multiboot_kernel_gets_its_magic_command_line_modules_and_memory_size() {
    let dir = scratch("multiboot");
    let kernel = file(&dir, "kernel.elf", &guest("multiboot.elf"));
    let module = file(&dir, "module.txt", b"module-text");
    let Some((m, console)) = machine(32) else {
        return;
    };
    let modules = [Module {
        path: &module,
        cmdline: "module.txt",
    }];
    let loaded = m
        .load_multiboot(&MultibootBoot {
            kernel: &kernel,
            cmdline: "mb-args",
            modules: &modules,
        })
        .unwrap();
    assert_eq!(loaded.entry, 0x10_000c);
    assert_eq!(loaded.modules.len(), 1);
    assert_eq!(loaded.modules[0].0 % 4096, 0);
    let (outcome, text) = run(&m, &console);
    assert_eq!(text, "mb-args module-text");
    // mem_upper: 31 MiB above 1 MiB, in KiB.
    assert_eq!(
        outcome,
        Outcome::DeviceRequest {
            device: "debug-exit".into(),
            status: 31 * 1024
        }
    );
}

#[test]
fn a_kernel_that_is_not_multiboot_is_refused_by_name() {
    let dir = scratch("not-multiboot");
    let kernel = file(&dir, "vmlinux", &guest("linux64.elf"));
    let Some((m, _)) = machine(32) else {
        return;
    };
    let err = m
        .load_multiboot(&MultibootBoot {
            kernel: &kernel,
            cmdline: "",
            modules: &[],
        })
        .unwrap_err();
    assert_eq!(err.code(), "BAD_IMAGE");
    assert!(err.to_string().contains("no Multiboot header"), "{err}");
}
