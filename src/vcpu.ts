/**
 * A vCPU handle: start-up mode, registers and counters.
 * @module
 */
import { callNative } from './errors.js';
import type { NativeMachine } from './native.js';
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
  readonly #machine: NativeMachine;
  /** The vCPU's index, which is also its initial APIC ID. */
  readonly index: number;

  /** @internal */
  constructor(machine: NativeMachine, index: number) {
    this.#machine = machine;
    this.index = index;
  }

  /** Puts the vCPU into `setup.mode`, ready to run at `setup.entry`. */
  setup(setup: VcpuSetup): void {
    callNative(() => this.#machine.setupVcpu(this.index, setup.mode, setup.entry, setup.stack ?? 0x8000));
  }

  /** The general registers. */
  registers(): Registers {
    return callNative(() => this.#machine.getRegisters(this.index));
  }

  /** Changes some general registers, leaving the others as they are. */
  setRegisters(changes: Partial<Registers>): void {
    const next = { ...this.registers(), ...changes };
    callNative(() => this.#machine.setRegisters(this.index, next));
  }

  /** Exit counters and handling latency. */
  stats(): VcpuStats {
    return toVcpuStats(callNative(() => this.#machine.stats(this.index)));
  }
}
