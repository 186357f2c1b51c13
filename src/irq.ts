/**
 * Interrupts of a {@link Machine} with `irqchip`: IRQ lines, message-signalled interrupts, and
 * the eventfds KVM raises interrupts from (irqfd) or counts guest writes into (ioeventfd). The
 * {@link Machine} methods of the same names call these.
 * @module
 */
import { ArgumentError, callNative } from './errors.js';
import type { NativeEventFd, NativeMachine } from './native.js';
import { describe, oneOf, wholeNumber } from './validate.js';

/**
 * An eventfd that raises a guest interrupt when triggered, without an ioctl per interrupt.
 * @example
 * ```ts
 * using irqfd = vm.createIrqFd(5); // closed at the end of the scope
 * irqfd.trigger();
 * ```
 */
export interface IrqFd extends Disposable {
  /** Raises the interrupt (edge-triggered). */
  trigger(): void;
  /** Detaches it from the machine. Idempotent; using it afterwards throws `INVALID_STATE`. */
  close(): void;
  /** Closes it: what a `using` declaration calls at the end of its scope. */
  [Symbol.dispose](): void;
}

/** Where an {@link IoEventFd} listens. */
export interface IoEventFdOptions {
  /** `port` (default) or `mmio` (outside guest RAM). */
  space?: 'port' | 'mmio';
  /** The port or guest-physical address. */
  address: number;
  /** Access width in bytes (1, 2, 4 or 8); needed with `datamatch`. */
  length?: number;
  /** Only writes of this value count. */
  datamatch?: bigint;
}

/** An eventfd KVM signals, inside the kernel and without a VM exit, when the guest writes an address. */
export interface IoEventFd extends Disposable {
  /** How many matching writes happened since the last call. */
  take(): number;
  /** Detaches it from the machine. Idempotent; using it afterwards throws `INVALID_STATE`. */
  close(): void;
  /** Closes it: what a `using` declaration calls at the end of its scope. */
  [Symbol.dispose](): void;
}

/** {@link Machine.setIrqLine} on `vm`'s native machine. */
export function setIrqLine(vm: NativeMachine, irq: number, level: boolean): void {
  wholeNumber(irq, 'irq', 0, 23);
  callNative(() => vm.setIrqLine(irq, level));
}

/** {@link Machine.signalMsi} on `vm`'s native machine. */
export function signalMsi(vm: NativeMachine, address: number, data: number): boolean {
  wholeNumber(address, 'address', 0, Number.MAX_SAFE_INTEGER);
  wholeNumber(data, 'data', 0, 0xffff_ffff);
  return callNative(() => vm.signalMsi(address, data));
}

/** {@link Machine.createIrqFd} on `vm`'s native machine. */
export function createIrqFd(vm: NativeMachine, gsi: number): IrqFd {
  wholeNumber(gsi, 'gsi', 0, 23);
  return eventFd(callNative(() => vm.createIrqfd(gsi)));
}

/** {@link Machine.createIoEventFd} on `vm`'s native machine. */
export function createIoEventFd(vm: NativeMachine, options: IoEventFdOptions): IoEventFd {
  const { space = 'port', address, length = 0, datamatch } = options;
  oneOf(space, 'options.space', ['port', 'mmio'] as const);
  wholeNumber(address, 'options.address', 0, space === 'port' ? 0xffff : Number.MAX_SAFE_INTEGER);
  if (![0, 1, 2, 4, 8].includes(length)) {
    throw new ArgumentError('options.length', `expected 1, 2, 4 or 8 (or 0 for any width), got ${describe(length)}`);
  }
  if (datamatch !== undefined && typeof datamatch !== 'bigint') {
    throw new ArgumentError('options.datamatch', `expected a bigint, got ${describe(datamatch)}`);
  }
  return eventFd(callNative(() => vm.createIoeventfd(space, address, length, datamatch)));
}

function eventFd(fd: NativeEventFd): IrqFd & IoEventFd {
  const close = () => callNative(() => fd.close());
  return {
    trigger: () => callNative(() => fd.trigger()),
    take: () => callNative(() => fd.take()),
    close,
    [Symbol.dispose]: close,
  };
}
