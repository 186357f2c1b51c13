/**
 * Loading a guest into a {@link Machine}: a Linux kernel (ELF vmlinux or bzImage), a Multiboot
 * kernel with its modules, or a flat binary. The {@link Machine} methods of the same names call
 * these.
 * @module
 */
import { callNative } from './errors.js';
import { defaultKernelCache } from './kernel-cache.js';
import type { NativeMachine } from './native.js';
import { eachOf, object, oneOf, optionalText, string, text, wholeNumber } from './validate.js';
import type { CpuMode } from './vcpu.js';

/** Where a kernel was loaded, and how vCPU 0 enters it. */
export interface LoadedKernel {
  /**
   * `pvh` (32-bit entry with a start-info page), `linux64` (the 64-bit boot protocol at the
   * ELF entry) or `bzimage` (the 64-bit boot protocol at a bzImage's entry, whose own
   * decompressor runs first).
   */
  readonly protocol: 'pvh' | 'linux64' | 'bzimage';
  /** The entry point's guest-physical address. */
  readonly entry: number;
  /** Where the initrd was put, if there is one. */
  readonly initrd?: {
    /** Its guest-physical address. */
    readonly address: number;
    /** Its size in bytes. */
    readonly size: number;
  };
  /** For a bzImage decompressed on the host: how. */
  readonly decompressed?: {
    /** The payload's compression: `gzip`, `xz`, `lzma`, `lz4` or `zstd`. */
    readonly compression: string;
    /** Whether the decompressed kernel came from the cache. */
    readonly fromCache: boolean;
  };
}

/** A Multiboot module: a file loaded page-aligned after the kernel, and its string. */
export interface MultibootModule {
  /** The file. */
  readonly path: string;
  /** The string the kernel sees for it (default: empty). */
  readonly cmdline?: string;
}

/** Where a Multiboot kernel and its modules were loaded. */
export interface LoadedMultiboot {
  /** The entry point's guest-physical address. */
  readonly entry: number;
  /** Where the kernel's image ends. */
  readonly kernelEnd: number;
  /** Each module's place in guest RAM, in order. */
  readonly modules: readonly ModulePlacement[];
}

/** Where a Multiboot module was put. */
export interface ModulePlacement {
  /** Its first byte's guest-physical address. */
  readonly start: number;
  /** The guest-physical address just past it. */
  readonly end: number;
}

/** Where {@link Machine.loadFlat} puts a flat binary and how vCPU 0 enters it. */
export interface FlatBinaryOptions {
  /** The guest-physical address of its first byte. */
  address: number;
  /** The mode vCPU 0 starts in. */
  mode: CpuMode;
  /** Where it is entered (default `address`). */
  entry?: number;
  /** The initial stack pointer (default 0x8000). */
  stack?: number;
}

/** How {@link Machine.loadLinux} treats a bzImage. */
export interface LoadLinuxOptions {
  /**
   * `decompress` (default): decompress its payload on the host and enter the vmlinux
   * inside, which saves the guest the kernel's own decompressor (falling back to `standard`
   * for bzip2 and lzo). `standard`: load it as the boot protocol says.
   */
  bzImage?: 'decompress' | 'standard';
  /**
   * The directory where decompressed kernels are cached by the image's SHA-256, or `false`
   * for none (default {@link defaultKernelCache}).
   */
  kernelCache?: string | false;
}

/** {@link Machine.loadLinux} on `vm`'s native machine. */
export function loadLinux(
  vm: NativeMachine,
  kernel: string,
  initrd: string | undefined,
  cmdline: string,
  options: LoadLinuxOptions,
): LoadedKernel {
  const { bzImage = 'decompress', kernelCache = defaultKernelCache() } = options;
  text(kernel, 'kernel');
  optionalText(initrd, 'initrd');
  string(cmdline, 'cmdline');
  oneOf(bzImage, 'options.bzImage', ['decompress', 'standard'] as const);
  const native = {
    standardBzimage: bzImage === 'standard',
    ...(kernelCache === false ? {} : { cacheDir: kernelCache }),
  };
  const loaded = callNative(() => vm.loadLinux(kernel, initrd, cmdline, native));
  return {
    protocol: loaded.protocol,
    entry: loaded.entry,
    ...(loaded.initrdAddr === undefined || loaded.initrdAddr === null
      ? {}
      : { initrd: { address: loaded.initrdAddr, size: loaded.initrdSize ?? 0 } }),
    ...(loaded.compression === undefined || loaded.compression === null
      ? {}
      : { decompressed: { compression: loaded.compression, fromCache: loaded.fromCache ?? false } }),
  };
}

/** {@link Machine.loadMultiboot} on `vm`'s native machine. */
export function loadMultiboot(
  vm: NativeMachine,
  kernel: string,
  cmdline: string,
  modules: readonly MultibootModule[],
): LoadedMultiboot {
  text(kernel, 'kernel');
  string(cmdline, 'cmdline');
  eachOf(modules, 'modules', (m, name) => text(object(m, name).path, `${name}.path`));
  const native = modules.map((m) => ({ path: m.path, cmdline: m.cmdline ?? '' }));
  const loaded = callNative(() => vm.loadMultiboot(kernel, cmdline, native));
  return {
    entry: loaded.entry,
    kernelEnd: loaded.kernelEnd,
    modules: loaded.modules.map(([start = 0, end = 0]) => ({ start, end })),
  };
}

/** {@link Machine.loadFlat} on `vm`'s native machine. */
export function loadFlat(vm: NativeMachine, path: string, options: FlatBinaryOptions): number {
  const { address, mode, entry = address, stack = 0x8000 } = options;
  text(path, 'path');
  wholeNumber(address, 'options.address', 0, Number.MAX_SAFE_INTEGER);
  oneOf(mode, 'options.mode', ['real', 'protected', 'long'] as const);
  return callNative(() => vm.loadFlat(path, address, entry, mode, stack));
}
