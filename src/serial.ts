/**
 * A 16550A UART as Node streams.
 * @module
 */
import { Readable, Writable } from 'node:stream';
import { callNative } from './errors.js';
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
export class SerialPort {
  /** The guest's transmitted bytes. */
  readonly output: Readable;
  /** Bytes for the guest to receive. */
  readonly input: Writable;

  /** Its first port. */
  get port(): number {
    return this.#native.port;
  }
  readonly #native: NativeSerial;
  /** The reader is behind: output waits in the UART's bounded buffer until it reads. */
  #behind = false;

  /** @internal */
  constructor(native: NativeSerial) {
    this.#native = native;
    this.output = new Readable({
      read: () => {
        this.#behind = false;
        this.drain();
      },
    });
    this.input = new Writable({
      write: (chunk: Buffer, _encoding, done) => this.#offer(chunk, done),
    });
  }

  /** Feeds `chunk` to the guest as its FIFO makes room. */
  #offer(chunk: Buffer, done: (error?: Error | null) => void): void {
    let rest = chunk;
    const step = () => {
      try {
        rest = rest.subarray(this.#native.input(rest));
      } catch (error) {
        done(error as Error);
        return;
      }
      if (rest.length === 0) {
        done();
      } else {
        setTimeout(step, 1);
      }
    };
    step();
  }

  /** @internal Moves the guest's output into the stream, unless its reader is behind. */
  drain(): void {
    if (this.#behind) {
      return;
    }
    const bytes = callNative(() => this.#native.takeOutput());
    if (bytes.length > 0) {
      this.#behind = !this.output.push(bytes);
    }
  }

  /** @internal Drains the output and ends the stream. */
  end(): void {
    this.#behind = false;
    this.drain();
    this.output.push(null);
  }
}
