/**
 * Machine configuration: what users write, and its checked form.
 *
 * This layer checks types and parses sizes. Layout rules (page alignment, overlaps) and the
 * host's limits (vCPUs, memory slots, address width) are checked by the Rust core against the
 * running kernel, and reported as the same {@link ConfigError}.
 * @module
 */
import { ConfigError } from './errors.js';
import type { NativeConfig } from './native.js';
import { parseSize, type Size } from './size.js';

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
   * Guest RAM: a size for one region at address 0, or a list of regions. Gaps between
   * regions (such as the 32-bit PCI hole) are unmapped, so accesses there reach MMIO devices.
   */
  memory: Size | MemoryRegion[];
  /** What backs guest RAM (default `anonymous`). */
  backing?: MemoryBacking;
  /** Ask for transparent huge pages for guest RAM; fails where the host has none (default false). */
  hugePages?: boolean;
  /** Number of vCPUs (default 1; at most what the host's KVM allows). */
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
   * last access, and a streak yields to the event loop after 1 ms.
   */
  eventLoopSpinMicros?: number;
  /**
   * How long (ms) a TypeScript device may take to answer before the machine stops with a
   * `HANDLER_FAILED` error (default 10000; 0 waits forever).
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
}

/** A configuration with every default filled in. */
export interface ResolvedConfig {
  native: NativeConfig;
  handlerTimeoutMs: number;
  eventLoopSpinMicros: number;
}

function integer(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(field, `expected a whole number from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

function regions(memory: unknown): NativeConfig['memory'] {
  if (typeof memory === 'number' || typeof memory === 'string') {
    return [{ guestAddr: 0, size: parseSize(memory, 'memory') }];
  }
  if (!Array.isArray(memory)) {
    throw new ConfigError('memory', 'expected a size (like "64M") or a list of { guestAddr, size }');
  }
  return memory.map((region: unknown, i) => {
    if (typeof region !== 'object' || region === null) {
      throw new ConfigError(`memory[${i}]`, 'expected { guestAddr, size }');
    }
    const r = region as Record<string, unknown>;
    return {
      guestAddr: integer(r.guestAddr, `memory[${i}].guestAddr`, 0, Number.MAX_SAFE_INTEGER),
      size: parseSize(r.size, `memory[${i}].size`),
    };
  });
}

/** Checks types, parses sizes and fills in defaults. */
export function resolveConfig(config: MachineConfig): ResolvedConfig {
  if (typeof config !== 'object' || config === null) {
    throw new ConfigError('config', 'expected an object');
  }
  const unhandled = config.unhandled ?? 'error';
  if (unhandled !== 'error' && unhandled !== 'ignore') {
    throw new ConfigError('unhandled', `expected "error" or "ignore", got ${JSON.stringify(unhandled)}`);
  }
  const flag = (name: 'irqchip' | 'hugePages') => {
    const value = config[name] ?? false;
    if (typeof value !== 'boolean') {
      throw new ConfigError(name, `expected true or false, got ${JSON.stringify(value)}`);
    }
    return value;
  };
  const backing = config.backing ?? 'anonymous';
  const file = typeof backing === 'object' && backing !== null ? backing.file : undefined;
  if ((backing !== 'anonymous' && backing !== 'memfd' && typeof file !== 'string') || file === '') {
    throw new ConfigError('backing', 'expected "anonymous", "memfd" or { file: "/path" }');
  }
  if (config.kvmPath !== undefined && typeof config.kvmPath !== 'string') {
    throw new ConfigError('kvmPath', 'expected a path string');
  }
  const native: NativeConfig = {
    memory: regions(config.memory),
    vcpus: integer(config.vcpus ?? 1, 'vcpus', 1, 2 ** 32 - 1),
    unhandled,
    handoffSpinMicros: integer(config.handoffSpinMicros ?? 200, 'handoffSpinMicros', 0, 1_000_000),
    irqchip: flag('irqchip'),
    backing: file === undefined ? (backing as string) : 'file',
    hugePages: flag('hugePages'),
  };
  if (file !== undefined) {
    native.backingPath = file;
  }
  if (config.kvmPath !== undefined) {
    native.kvmPath = config.kvmPath;
  }
  return {
    native,
    handlerTimeoutMs: integer(config.handlerTimeoutMs ?? 10_000, 'handlerTimeoutMs', 0, 2 ** 31 - 1),
    eventLoopSpinMicros: integer(config.eventLoopSpinMicros ?? 50, 'eventLoopSpinMicros', 0, 1_000_000),
  };
}
