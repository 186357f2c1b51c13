/**
 * The exits the benchmark measures, as the bench guest (`guests/bench.S`) makes them.
 * @module
 */

/** Kinds of exit the benchmark measures. */
export type ExitName = 'pio-out' | 'pio-in' | 'mmio-write' | 'mmio-read' | 'cpuid';

/** Every kind, in the guest's numbering. */
export const EXITS: readonly ExitName[] = ['pio-out', 'pio-in', 'mmio-write', 'mmio-read', 'cpuid'];

/** The bench guest's port. */
export const BENCH_PORT = 0x5e0;
/** The bench guest's MMIO address (outside guest RAM on every path). */
export const BENCH_MMIO = 0xd000_0000;
/** The port the guest writes when it is done (QEMU's isa-debug-exit). */
export const DONE_PORT = 0xf4;
/** Where the bench guest is loaded and starts, in 32-bit protected mode. */
export const BENCH_ENTRY = 0x10_0000;
/** Guest RAM of the bench machine. */
export const BENCH_RAM = '2M';

/** The number the guest takes in EAX for `exit`. */
export function exitCode(exit: ExitName): number {
  return EXITS.indexOf(exit);
}

/** Whether `exit` reaches userspace (cpuid is answered inside KVM). */
export function reachesUserspace(exit: ExitName): boolean {
  return exit !== 'cpuid';
}

/** Whether `exit` is a write (the only kind a posted device takes without the vCPU waiting). */
export function isWrite(exit: ExitName): boolean {
  return exit === 'pio-out' || exit === 'mmio-write';
}
