/**
 * The Node streams of a byte-stream device (a UART, a virtio console).
 * @module
 */
import { Readable, Writable } from 'node:stream';
import { callNative, KvmkitError } from './errors.js';

/** The binding's side of a byte-stream device. */
interface NativeByteStream {
  /**
   * Queues bytes for the guest; returns how many fit. When not all fit, the device announces
   * room (as it announces output) once the guest has taken enough.
   */
  input(data: Buffer): number;
  /** Takes what the guest sent so far. */
  takeOutput(): Buffer;
}

/**
 * A device that carries bytes both ways, as Node streams: `output` streams what the guest
 * sends and ends when the run ends; what is written to `input` reaches the guest as the
 * device makes room (writes wait while the guest has not read what came before: the device
 * tells when it has room again, nothing polls).
 *
 * When the run ends (or the machine is closed before it ran), `input` is destroyed: a write
 * the guest had not taken whole fails with `INVALID_STATE`, naming how many of its bytes
 * never reached the guest, and so do the callbacks of the writes queued behind it, of
 * `end()` and of `stream.finished()`; later writes fail with Node's `ERR_STREAM_DESTROYED`.
 * No `'error'` event is emitted, so a guest that never reads its input cannot crash a host
 * that listens for none.
 *
 * The guest never waits for `output` to be read. While its reader is behind (the stream's
 * buffer is full), the device keeps the latest 1 MiB of output for it and drops older
 * bytes, so a guest flooding it costs bounded host memory.
 */
export class ByteStreamDevice {
  /** What the guest sends. */
  readonly output: Readable;
  /** Bytes for the guest to receive. */
  readonly input: Writable;

  readonly #native: NativeByteStream;
  /** The reader is behind: output waits in the device's bounded buffer until it reads. */
  #behind = false;
  #ended = false;
  /** The write the device could not take whole: the rest of it, offered again on room. */
  #pending: { chunk: Buffer; rest: Buffer; done: (error?: Error | null) => void } | undefined;

  /** @internal */
  constructor(native: NativeByteStream) {
    this.#native = native;
    this.output = new Readable({
      read: () => {
        this.#behind = false;
        this.#takeOutput();
      },
    });
    this.input = new Writable({
      write: (chunk: Buffer, _encoding, done) => this.#offer(chunk, done),
    });
  }

  /** Feeds `chunk` to the guest: what does not fit now waits for the device's room notice. */
  #offer(chunk: Buffer, done: (error?: Error | null) => void): void {
    this.#pending = { chunk, rest: chunk, done };
    this.#feed();
  }

  /** Offers the waiting write again; completes it once the device took all of it. */
  #feed(): void {
    const pending = this.#pending;
    if (pending === undefined) {
      return;
    }
    try {
      pending.rest = pending.rest.subarray(callNative(() => this.#native.input(pending.rest)));
    } catch (error) {
      this.#pending = undefined;
      pending.done(error as Error);
      return;
    }
    if (pending.rest.length === 0) {
      this.#pending = undefined;
      pending.done();
    }
  }

  /**
   * @internal The device has news (its output event): output waiting, or room for input it
   * refused. Moves the output into the stream and offers the waiting input again.
   */
  drain(): void {
    this.#feed();
    this.#takeOutput();
  }

  /** Moves the guest's output into the stream, unless its reader is behind. */
  #takeOutput(): void {
    if (this.#behind || this.#ended) {
      return;
    }
    const bytes = callNative(() => this.#native.takeOutput());
    if (bytes.length > 0) {
      this.#behind = !this.output.push(bytes);
    }
  }

  /**
   * @internal The run ended (`why` says how, as in "the run ended (halted)"): drains the
   * output and ends its stream, destroys the input and fails the write the guest had not
   * taken whole.
   */
  end(why: string): void {
    this.#behind = false;
    this.#takeOutput();
    this.#ended = true;
    this.output.push(null);
    // Destroyed first, the stream reports the failure to the write's callback (and to those
    // of the writes behind it) without an 'error' event nobody may be listening for.
    this.input.destroy();
    const pending = this.#pending;
    this.#pending = undefined;
    pending?.done(
      new KvmkitError(
        'INVALID_STATE',
        `input not delivered: the guest had not taken ${pending.rest.length} of the write's ${pending.chunk.length} bytes when ${why}`,
      ),
    );
  }
}
