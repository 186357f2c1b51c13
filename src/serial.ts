/**
 * A 16550A UART as Node streams.
 * @module
 */
import { ByteStreamDevice } from './byte-stream.js';
import type { NativeSerial } from './native.js';

/** Where a serial port sits. */
export interface SerialOptions {
  /** First of its 8 ports (default 0x3f8, COM1). */
  port?: number;
  /**
   * The interrupt line it raises: default 4 (COM1's) on a machine with `irqchip`, none
   * otherwise (the guest then polls its line-status register, as early boot code does).
   */
  irq?: number | null;
}

/**
 * A 16550A UART answered in Rust on the vCPU thread. `output` streams what the guest
 * transmits and ends when the run ends; what is written to `input` reaches the guest's
 * receive FIFO (64 bytes: writes wait while the guest has not read what came before).
 *
 * The guest never waits for `output` to be read. While its reader is behind (the stream's
 * buffer is full), the UART keeps the latest 1 MiB of output for it and drops older bytes,
 * so a guest flooding the port costs bounded host memory.
 */
export class SerialPort extends ByteStreamDevice {
  /** Its first port. */
  get port(): number {
    return this.#native.port;
  }
  readonly #native: NativeSerial;

  /** @internal */
  constructor(native: NativeSerial) {
    super(native);
    this.#native = native;
  }
}
