/**
 * A vCPU handle: start-up mode, registers and counters.
 * @module
 */
import { callNative } from './errors.js';
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

import { toVcpuStats, type VcpuStats } from './stats.js';

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
  /** The vCPU's index, which is also its initial APIC ID. */
  readonly index: number;

  /** @internal */
  constructor(native: NativeVcpu, index: number) {
    this.#native = native;
    this.index = index;
  }

  /** Puts the vCPU into `setup.mode`, ready to run at `setup.entry`. */
  setup(setup: VcpuSetup): void {
    callNative(() => this.#native.setup(setup.mode, setup.entry, setup.stack ?? 0x8000));
  }

  /** The general registers. */
  registers(): Registers {
    return callNative(() => this.#native.getRegisters());
  }

  /** Changes some general registers, leaving the others as they are. */
  setRegisters(changes: Partial<Registers>): void {
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
   */
  setCpuid(entries: readonly CpuidEntry[]): void {
    callNative(() => this.#native.setCpuid([...entries]));
  }

  /** The local APIC's 1 KiB register page (needs `irqchip`). */
  lapic(): Uint8Array {
    return new Uint8Array(callNative(() => this.#native.getLapic()));
  }

  /** Replaces the local APIC's 1 KiB register page (needs `irqchip`). */
  setLapic(registers: Uint8Array): void {
    const bytes = Buffer.from(registers.buffer, registers.byteOffset, registers.byteLength);
    callNative(() => this.#native.setLapic(bytes));
  }

  /** The multiprocessing state. */
  mpState(): MpState {
    return callNative(() => this.#native.getMpState());
  }

  /** Sets the multiprocessing state (for example `halted`, or `uninitialized` to wait for INIT/SIPI). */
  setMpState(state: MpState): void {
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
    callNative(() => this.#native.setSingleStep(enabled));
  }

  /** Exit counters and handling latency. */
  stats(): VcpuStats {
    return toVcpuStats(callNative(() => this.#native.stats()));
  }
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
