/**
 * A vCPU handle: start-up mode, registers and counters.
 * @module
 */
import { ArgumentError, callNative } from './errors.js';
import type { RamRegion } from './memory.js';
import type { CpuidEntry, Fpu, MsrEntry, NativeVcpu, SpecialRegisters, VcpuEvents } from './native.js';

export type {
  CpuidEntry,
  DescriptorTable,
  ExceptionEvent,
  Fpu,
  InterruptEvent,
  MsrEntry,
  NmiEvent,
  Segment,
  SpecialRegisters,
  VcpuEvents,
} from './native.js';

/** The multiprocessing state of a vCPU (`KVM_MP_STATE_*`; the binding maps the names). */
export type MpState = 'runnable' | 'uninitialized' | 'init-received' | 'halted' | 'sipi-received';

// The binding's names, checked against its typings so the two cannot drift apart.
const MP_STATES = [
  'runnable',
  'uninitialized',
  'init-received',
  'halted',
  'sipi-received',
] as const satisfies readonly MpState[] & readonly ReturnType<NativeVcpu['getMpState']>[];

import { toVcpuStats, type VcpuStats } from './stats.js';
import { boolean, bytes as checkBytes, eachOf, object, oneOf, unsigned, wholeNumber } from './validate.js';

/** The highest address each mode can start at: real mode's 64 KiB segment, or the low 4 GiB. */
const MODE_REACH: Record<CpuMode, { top: number; why: string }> = {
  real: { top: 0xffff, why: 'real mode starts with segments based at 0, so it reaches 0 to 0xffff' },
  protected: { top: 0xffff_ffff, why: 'protected mode reaches the low 4 GiB' },
  long: { top: 0xffff_ffff, why: 'long mode starts with the low 4 GiB identity-mapped' },
};

/** The general registers of a vCPU, as unsigned 64-bit bigints. */
export interface Registers {
  /** RAX. */
  rax: bigint;
  /** RBX. */
  rbx: bigint;
  /** RCX. */
  rcx: bigint;
  /** RDX. */
  rdx: bigint;
  /** RSI. */
  rsi: bigint;
  /** RDI. */
  rdi: bigint;
  /** RSP, the stack pointer. */
  rsp: bigint;
  /** RBP. */
  rbp: bigint;
  /** R8. */
  r8: bigint;
  /** R9. */
  r9: bigint;
  /** R10. */
  r10: bigint;
  /** R11. */
  r11: bigint;
  /** R12. */
  r12: bigint;
  /** R13. */
  r13: bigint;
  /** R14. */
  r14: bigint;
  /** R15. */
  r15: bigint;
  /** RIP, the instruction pointer. */
  rip: bigint;
  /** RFLAGS (bit 1 is reserved and always set). */
  rflags: bigint;
}

/**
 * The processor mode a vCPU starts in:
 * - `real`: 16-bit real mode, segments based at 0 (`entry` is the physical address);
 * - `protected`: 32-bit protected mode with flat 4 GiB segments, no paging;
 * - `long`: 64-bit mode with the low 4 GiB identity-mapped.
 *
 * `protected` and `long` write a GDT at 0x500 and (for `long`) page tables at 0x9000–0xEFFF
 * into guest RAM; keep guest code and data clear of them.
 */
export type CpuMode = 'real' | 'protected' | 'long';

/** Where and how a vCPU starts. */
export interface VcpuSetup {
  /** The processor mode. */
  mode: CpuMode;
  /** The first instruction's address. */
  entry: number;
  /** The initial stack pointer (default 0x8000). */
  stack?: number;
}

/**
 * One vCPU. Its state can be read and written while it is not running guest code: before
 * the machine starts, while it is paused, while the vCPU waits for a device handler, and
 * after the run. Otherwise the call throws `INVALID_STATE`.
 */
export class Vcpu {
  readonly #native: NativeVcpu;
  readonly #ram: readonly RamRegion[];
  /** The vCPU's index, which is also its initial APIC ID. */
  readonly index: number;

  /** @internal */
  constructor(native: NativeVcpu, index: number, ram: readonly RamRegion[]) {
    this.#native = native;
    this.index = index;
    this.#ram = ram;
  }

  /**
   * Puts the vCPU into `setup.mode`, ready to run at `setup.entry`. An entry the mode cannot
   * reach, or outside guest RAM, throws `INVALID_ARGUMENT`.
   * @example
   * ```ts
   * vm.memory.write(0x1000, Uint8Array.of(0xf4)); // hlt
   * vm.vcpu(0).setup({ mode: 'real', entry: 0x1000 });
   * ```
   */
  setup(setup: VcpuSetup): void {
    const mode = oneOf(setup.mode, 'setup.mode', ['real', 'protected', 'long'] as const);
    const { top, why } = MODE_REACH[mode];
    const entry = wholeNumber(setup.entry, 'setup.entry', 0, Number.MAX_SAFE_INTEGER);
    const stack = wholeNumber(setup.stack ?? 0x8000, 'setup.stack', 0, Number.MAX_SAFE_INTEGER);
    if (entry > top) {
      throw new ArgumentError('setup.entry', `0x${entry.toString(16)} is out of reach: ${why}`);
    }
    const regions = this.#ram;
    if (!regions.some((r) => entry >= r.guestAddr && entry < r.guestAddr + r.size)) {
      const ram = regions.map((r) => `0x${r.guestAddr.toString(16)}..0x${(r.guestAddr + r.size).toString(16)}`);
      throw new ArgumentError('setup.entry', `0x${entry.toString(16)} is outside guest RAM (${ram.join(', ')})`);
    }
    callNative(() => this.#native.setup(mode, entry, stack));
  }

  /** The general registers. */
  registers(): Registers {
    return callNative(() => this.#native.getRegisters());
  }

  /** Changes some general registers, leaving the others as they are. */
  setRegisters(changes: Partial<Registers>): void {
    for (const [name, value] of Object.entries(object(changes, 'changes'))) {
      unsigned(value, `changes.${name}`, 64);
    }
    const next = { ...this.registers(), ...changes };
    callNative(() => this.#native.setRegisters(next));
  }

  /** The special registers: segments, descriptor tables, control registers, EFER. */
  specialRegisters(): SpecialRegisters {
    return callNative(() => this.#native.getSpecialRegisters());
  }

  /** Changes some special registers, leaving the others as they are. */
  setSpecialRegisters(changes: Partial<SpecialRegisters>): void {
    const next = { ...this.specialRegisters(), ...changes };
    callNative(() => this.#native.setSpecialRegisters(next));
  }

  /** The x87 FPU and SSE state. */
  fpu(): Fpu {
    return callNative(() => this.#native.getFpu());
  }

  /** Changes some of the FPU and SSE state. */
  setFpu(changes: Partial<Fpu>): void {
    const next = { ...this.fpu(), ...changes };
    callNative(() => this.#native.setFpu(next));
  }

  /** Reads the MSRs `indices`, in order, up to the first one KVM cannot read. */
  msrs(indices: readonly number[]): MsrEntry[] {
    eachOf(indices, 'indices', (index, name) => wholeNumber(index, name, 0, 0xffff_ffff));
    return callNative(() => this.#native.getMsrs([...indices]));
  }

  /** Writes MSRs; returns how many KVM accepted (in order, up to the first it refused). */
  setMsrs(entries: readonly MsrEntry[]): number {
    return callNative(() => this.#native.setMsrs([...entries]));
  }

  /** The CPUID leaves this vCPU presents to its guest. */
  cpuid(): CpuidEntry[] {
    return callNative(() => this.#native.getCpuid());
  }

  /**
   * Sets the CPUID leaves this vCPU presents; KVM accepts it only before the vCPU first runs.
   * Start from {@link cpuid} or {@link supportedCpuid} and change it with {@link maskCpuid}.
   *
   * KVM may keep some bits its own way whatever is asked (a software-assisted KVM keeps
   * XSAVE, for one): the leaves are read back, and every register that differs from what was
   * asked is returned, with both values. An empty list means the guest sees exactly `entries`.
   * @example
   * ```ts
   * const vcpu = vm.vcpu(0);
   * const forced = vcpu.setCpuid(maskCpuid(vcpu.cpuid(), [{ function: 1, register: 'ecx', clear: 1 << 26 }]));
   * for (const f of forced) console.warn(`CPUID ${f.function.toString(16)}.${f.register}: asked ${f.requested}, got ${f.actual}`);
   * ```
   */
  setCpuid(entries: readonly CpuidEntry[]): CpuidOverride[] {
    eachOf(entries, 'entries', (entry, name) => object(entry, name));
    callNative(() => this.#native.setCpuid([...entries]));
    const actual = new Map(this.cpuid().map((e) => [`${e.function}.${e.index}`, e]));
    const overrides: CpuidOverride[] = [];
    for (const asked of entries) {
      const got = actual.get(`${asked.function}.${asked.index}`);
      for (const register of ['eax', 'ebx', 'ecx', 'edx'] as const) {
        if (got !== undefined && got[register] !== asked[register]) {
          overrides.push({
            function: asked.function,
            index: asked.index,
            register,
            requested: asked[register],
            actual: got[register],
          });
        }
      }
    }
    return overrides;
  }

  /** The local APIC's 1 KiB register page (needs `irqchip`). */
  lapic(): Uint8Array {
    return new Uint8Array(callNative(() => this.#native.getLapic()));
  }

  /** Replaces the local APIC's 1 KiB register page (needs `irqchip`). */
  setLapic(registers: Uint8Array): void {
    checkBytes(registers, 'registers');
    const bytes = Buffer.from(registers.buffer, registers.byteOffset, registers.byteLength);
    callNative(() => this.#native.setLapic(bytes));
  }

  /** The multiprocessing state. */
  mpState(): MpState {
    return callNative(() => this.#native.getMpState());
  }

  /** Sets the multiprocessing state (for example `halted`, or `uninitialized` to wait for INIT/SIPI). */
  setMpState(state: MpState): void {
    oneOf(state, 'state', MP_STATES);
    callNative(() => this.#native.setMpState(state));
  }

  /** Exceptions, interrupts and NMIs pending or being injected. */
  events(): VcpuEvents {
    return callNative(() => this.#native.getEvents());
  }

  /** Changes pending or injected events, leaving the rest as they are. */
  setEvents(changes: Partial<VcpuEvents>): void {
    const next = { ...this.events(), ...changes };
    callNative(() => this.#native.setEvents(next));
  }

  /**
   * Injects exception `vector` (with `errorCode` for the exceptions that push one): the guest
   * takes it through its IDT when the vCPU next runs.
   */
  injectException(vector: number, errorCode?: number): void {
    wholeNumber(vector, 'vector', 0, 31);
    if (errorCode !== undefined) {
      wholeNumber(errorCode, 'errorCode', 0, 0xffff_ffff);
    }
    this.setEvents({
      exception: {
        injected: true,
        nr: vector,
        hasErrorCode: errorCode !== undefined,
        pending: false,
        errorCode: errorCode ?? 0,
      },
    });
  }

  /**
   * Turns single-stepping on or off: with it on, the vCPU takes a `debug` exit after each
   * instruction, which ends the run with an `UNHANDLED_EXIT` error naming it and RIP.
   */
  setSingleStep(enabled: boolean): void {
    boolean(enabled, 'enabled');
    callNative(() => this.#native.setSingleStep(enabled));
  }

  /** Exit counters and handling latency. */
  stats(): VcpuStats {
    return toVcpuStats(callNative(() => this.#native.stats()));
  }
}

/** A CPUID register KVM did not set as asked ({@link Vcpu.setCpuid}). */
export interface CpuidOverride {
  /** The leaf. */
  readonly function: number;
  /** The subleaf. */
  readonly index: number;
  /** The register. */
  readonly register: 'eax' | 'ebx' | 'ecx' | 'edx';
  /** What was asked. */
  readonly requested: number;
  /** What the guest sees. */
  readonly actual: number;
}

/** A change to one CPUID register of one leaf: clear some bits, then set some. */
export interface CpuidMask {
  /** The leaf. */
  function: number;
  /** The subleaf (default: every subleaf of the leaf). */
  index?: number;
  /** The register to change. */
  register: 'eax' | 'ebx' | 'ecx' | 'edx';
  /** Bits to clear (to hide features). */
  clear?: number;
  /** Bits to set. */
  set?: number;
}

/**
 * Returns `entries` with `masks` applied, for example to hide CX16 (leaf 1, ECX bit 13) from
 * a guest: `maskCpuid(entries, [{ function: 1, register: 'ecx', clear: 1 << 13 }])`.
 */
export function maskCpuid(entries: readonly CpuidEntry[], masks: readonly CpuidMask[]): CpuidEntry[] {
  return entries.map((entry) => {
    const next = { ...entry };
    for (const m of masks) {
      if (m.function === entry.function && (m.index === undefined || m.index === entry.index)) {
        next[m.register] = ((next[m.register] & ~(m.clear ?? 0)) | (m.set ?? 0)) >>> 0;
      }
    }
    return next;
  });
}
