/**
 * Device models written in TypeScript: what a device implements and what an access tells it
 * (the hand-off in `handoff.ts` brings them the guest's accesses).
 * @module
 */

/** One guest access to a device. */
export interface Access {
  /** The vCPU that made the access. */
  readonly vcpu: number;
  /** Offset from the start of the device's range. */
  readonly offset: number;
  /** The absolute port or guest-physical address. */
  readonly address: number;
  /** Width in bytes: 1, 2 or 4 for ports; 1, 2, 4 or 8 for MMIO. */
  readonly size: number;
}

/** What a read handler may return: a number for sizes up to 4, a number or bigint for 8. */
export type ReadValue = number | bigint;

/**
 * A device model. The vCPU that made an access waits until the handler returns (or its
 * Promise settles), then resumes the guest. A handler that throws, rejects, returns a value
 * of the wrong type, or whose Promise settles later than `handlerTimeoutMs` stops that
 * machine with a `HANDLER_FAILED` {@link MachineError}; the Node process and other machines
 * are unaffected. The timeout runs on the event loop, which a synchronous handler blocks:
 * its answer counts however late (see {@link MachineConfig.handlerTimeoutMs}).
 *
 * String I/O (`rep insb`, `rep outsw`, …) calls the handler once per element.
 */
export interface Device {
  /** Shown in errors and statistics. */
  readonly name: string;
  /** Answers a read. Without it, reads return all-ones. */
  read?(access: Access): ReadValue | Promise<ReadValue>;
  /** Accepts a write; `value` is a bigint for 8-byte accesses. Without it, writes are dropped. */
  write?(access: Access, value: number | bigint): void | Promise<void>;
  /**
   * Posted writes: the guest does not wait for `write`. The vCPU queues each write and
   * resumes at once; writes reach `write` in order, in batches, and before any later read
   * of the device. Use it for devices whose writes have no effect the guest must see
   * before its next instruction (consoles, logs, doorbells answered later). Threaded runs
   * only; inline runs call `write` directly.
   */
  readonly posted?: boolean;
}

/** A registered device; `remove()` takes it off the bus. */
export interface DeviceHandle {
  /** The device's name. */
  readonly name: string;
  /** `port` or `mmio`. */
  readonly space: 'port' | 'mmio';
  /** First port or address of its range. */
  readonly base: number;
  /** Length of its range. */
  readonly length: number;
  /** Takes the device off the bus; later accesses are unclaimed. */
  remove(): void;
}
