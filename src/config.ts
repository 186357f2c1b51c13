/**
 * Machine configuration: what users write, and its checked form.
 *
 * This layer checks types, parses sizes and refuses more RAM than the host has (unless
 * `overcommit`). Layout rules (page alignment, overlaps) and KVM's limits (vCPUs, memory
 * slots, address width) are checked by the Rust core against the running kernel, before it
 * creates anything, and reported as the same {@link ConfigError}.
 * @module
 */
import { totalmem } from 'node:os';
import { ConfigError } from './errors.js';
import { kvmInfo } from './kvm.js';
import type { NativeConfig } from './native.js';
import { formatSize, parseSize, type Size } from './size.js';
import { badConfig, boolean, describe, object, oneOf, text, wholeNumber } from './validate.js';

/** One region of guest RAM. */
export interface MemoryRegion {
  /** Guest-physical start address (a multiple of 4096). */
  guestAddr: number;
  /** Size: bytes or a string like `"512M"` (a multiple of 4096). */
  size: Size;
}

/**
 * What backs guest RAM: private anonymous memory (default), a memfd, or a file, both
 * mapped shared so another process can map the same RAM ({@link GuestMemory.fd}; a file's
 * regions lie in it one after another, in address order).
 */
export type MemoryBacking =
  | 'anonymous'
  | 'memfd'
  | {
      /** The backing file's path; it is created if missing and sized to the total RAM. */
      readonly file: string;
    };

/** What to do with a port or MMIO access that no device claims. */
export type UnhandledPolicy = 'error' | 'ignore';

/** The configuration of a {@link Machine}. */
export interface MachineConfig {
  /**
   * Guest RAM: a size, or a list of regions. A size up to 3 GiB is one region at address 0;
   * past that, RAM stops at 3 GiB and continues at 4 GiB, leaving the 32-bit hole (MMIO
   * windows, the IOAPIC at 0xfec00000, the local APICs at 0xfee00000) free, as on a PC.
   * Gaps between regions are unmapped, so accesses there reach MMIO devices.
   */
  memory: Size | MemoryRegion[];
  /** What backs guest RAM (default `anonymous`). */
  backing?: MemoryBacking;
  /** Ask for transparent huge pages for guest RAM; fails where the host has none (default false). */
  hugePages?: boolean;
  /**
   * Allow more guest RAM than the host has (default false). The host backs only the pages
   * the guest touches, so this works until the guest touches more than the host can give;
   * without it, such a size is refused before anything is mapped.
   */
  overcommit?: boolean;
  /** Number of vCPUs (default 1; at most what the host's KVM allows, `kvmkit info` shows it). */
  vcpus?: number;
  /**
   * Accesses no device claims: `"error"` (default) stops the machine with a
   * {@link MachineError} naming the exit, address and RIP; `"ignore"` reads all-ones and drops
   * writes, like an empty bus.
   */
  unhandled?: UnhandledPolicy;
  /**
   * The longest (µs) a vCPU spins waiting for a TypeScript device's answer before it sleeps
   * (default 200). Spinning avoids a thread wake-up, which costs more than a KVM exit on
   * virtualized hosts; when answers keep taking longer than this, the vCPU stops spinning for
   * them (but for an occasional probe), so slow devices cost little CPU.
   */
  handoffSpinMicros?: number;
  /**
   * After answering an access, how long (µs) Node's thread polls for the next one before it
   * returns to the event loop (default 50; 0 only looks once). While exits stream in, this keeps
   * the thread awake and answering, instead of being woken for each exit, which costs more
   * than the exit on virtualized hosts. It holds up other JS for at most that long after the
   * last access, and a streak yields to the event loop after 1 ms and 32 accesses, or after
   * 5 ms however few (where exits are slow, a turn every few exits costs more than they do).
   * Posted writes are taken the same way: after a batch, Node's thread waits this long for
   * more.
   */
  eventLoopSpinMicros?: number;
  /**
   * How long (ms) a TypeScript device may take to answer before the machine stops with a
   * `HANDLER_FAILED` error (default 10000; 0 waits forever). The clock is Node's event loop:
   * it covers a handler's returned Promise that settles late or never. A synchronous handler
   * that blocks the thread holds the clock up too, so its answer still counts; keep
   * handlers that may block out of the event loop (in a worker).
   */
  handlerTimeoutMs?: number;
  /**
   * Create KVM's in-kernel interrupt controllers (PIC, IOAPIC, local APICs) and PIT, so the
   * host can raise interrupts ({@link Machine.setIrqLine}, MSIs, irqfds). With them, `hlt`
   * waits for an interrupt inside KVM rather than ending the run. Default false.
   */
  irqchip?: boolean;
  /** The KVM device node (default `/dev/kvm`). */
  kvmPath?: string;
  /**
   * Confine each vCPU thread with a seccomp filter that allows KVM's ioctls and the few
   * system calls its loop needs, as Firecracker does (default `false`). A call outside the
   * list fails with `EPERM` (`'fail'`) or kills the process with `SIGSYS`
   * (`'kill-process'`). If the kernel refuses the filter, the run ends with a
   * `SANDBOX_FAILED` error before the guest runs. Device handlers written in TypeScript run
   * on Node's thread and are not confined. A sandboxed machine cannot {@link Machine.runInline}.
   * @example
   * ```ts
   * const vm = Machine.create({ memory: '64M', sandbox: 'fail' });
   * ```
   */
  sandbox?: false | 'fail' | 'kill-process';
}

/** A configuration with every default filled in. */
export interface ResolvedConfig {
  native: NativeConfig;
  handlerTimeoutMs: number;
  eventLoopSpinMicros: number;
}

function integer(value: unknown, field: string, min: number, max: number): number {
  return wholeNumber(value, field, min, max, badConfig);
}

function regions(memory: unknown): NativeConfig['memory'] {
  if (typeof memory === 'number' || typeof memory === 'string') {
    return parseSize(memory, 'memory');
  }
  if (!Array.isArray(memory)) {
    throw new ConfigError(
      'memory',
      `expected a size (like "64M") or a list of { guestAddr, size }, got ${describe(memory)}`,
    );
  }
  return memory.map((region: unknown, i) => {
    const r = object(region, `memory[${i}]`, badConfig);
    return {
      guestAddr: integer(r.guestAddr, `memory[${i}].guestAddr`, 0, Number.MAX_SAFE_INTEGER),
      size: parseSize(r.size, `memory[${i}].size`),
    };
  });
}

/**
 * Checks the vCPU count's type; the Rust core checks it against the host's KVM limit before
 * creating anything. A count of the wrong type is told that limit too.
 */
function vcpuCount(value: unknown, kvmPath: string | undefined): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 2 ** 32 - 1) {
    let limit = 'as many as the host allows';
    try {
      limit = `at most ${kvmInfo(kvmPath).maxVcpus} on this host`;
    } catch {
      // No usable KVM: the limit stays unnamed; creating the machine reports KVM itself.
    }
    throw new ConfigError('vcpus', `expected a whole number of vCPUs from 1 (${limit}), got ${describe(value)}`);
  }
  return value;
}

/** Refuses more RAM than the host has, unless `overcommit` allows it. */
function checkHostRam(memory: NativeConfig['memory'], overcommit: boolean): void {
  const total = typeof memory === 'number' ? memory : memory.reduce((sum, r) => sum + r.size, 0);
  const host = totalmem();
  if (total > host && !overcommit) {
    throw new ConfigError(
      'memory',
      `${formatSize(total)} is more than this host's ${formatSize(host)} of RAM; ` +
        'set overcommit: true to map it anyway (the host backs only the pages the guest touches)',
    );
  }
}

/** Checks types, parses sizes and fills in defaults. */
export function resolveConfig(config: MachineConfig): ResolvedConfig {
  object(config, 'config', badConfig);
  const unhandled = oneOf(config.unhandled ?? 'error', 'unhandled', ['error', 'ignore'] as const, badConfig);
  const flag = (name: 'irqchip' | 'hugePages' | 'overcommit') => boolean(config[name] ?? false, name, badConfig);
  const backing = config.backing ?? 'anonymous';
  const file = typeof backing === 'object' && backing !== null ? backing.file : undefined;
  if ((backing !== 'anonymous' && backing !== 'memfd' && typeof file !== 'string') || file === '') {
    throw new ConfigError('backing', `expected "anonymous", "memfd" or { file: "/path" }, got ${describe(backing)}`);
  }
  if (config.kvmPath !== undefined) {
    text(config.kvmPath, 'kvmPath', badConfig);
  }
  const memory = regions(config.memory);
  checkHostRam(memory, flag('overcommit'));
  const native: NativeConfig = {
    memory,
    vcpus: vcpuCount(config.vcpus ?? 1, config.kvmPath),
    unhandled,
    handoffSpinMicros: integer(config.handoffSpinMicros ?? 200, 'handoffSpinMicros', 0, 1_000_000),
    irqchip: flag('irqchip'),
    backing: file === undefined ? (backing as 'anonymous' | 'memfd') : 'file',
    hugePages: flag('hugePages'),
  };
  if (file !== undefined) {
    native.backingPath = file;
  }
  if (config.kvmPath !== undefined) {
    native.kvmPath = config.kvmPath;
  }
  if (config.sandbox !== undefined && config.sandbox !== false) {
    native.sandbox = oneOf(config.sandbox, 'sandbox', ['fail', 'kill-process'] as const, badConfig);
  }
  return {
    native,
    handlerTimeoutMs: integer(config.handlerTimeoutMs ?? 10_000, 'handlerTimeoutMs', 0, 2 ** 31 - 1),
    eventLoopSpinMicros: integer(config.eventLoopSpinMicros ?? 50, 'eventLoopSpinMicros', 0, 1_000_000),
  };
}
