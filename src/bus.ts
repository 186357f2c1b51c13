/**
 * The TypeScript side of the device bus: registered devices, and the dispatch of each
 * access to its device's handler — answered asynchronously (threaded vCPUs), synchronously
 * (inline vCPUs), or not at all (posted writes).
 * @module
 */
import type { Access, Device, DeviceHandle } from './devices.js';
import { callNative } from './errors.js';
import { type NativeEvent, type NativeMachine, type NativePostedWrite, native } from './native.js';

/** The opaque handle the hot-path calls take. */
type MachineHandle = ReturnType<NativeMachine['handle']>;

/** `ExitKind` indices of the Rust core. */
const IO_IN = 0;
const MMIO_READ = 2;

interface Registered {
  readonly device: Device;
  readonly handle: DeviceHandle;
}

/** A handler's answer, ready for the vCPU: a value of up to 8 bytes, or string-I/O bytes. */
export type Answer = { readonly word: readonly [number, number] } | { readonly bytes: Buffer };

const WRITTEN: Answer = { word: [0, 0] };

/** Whether the guest is reading (port in or MMIO read). */
function isRead(e: { exit: number }): boolean {
  return e.exit === IO_IN || e.exit === MMIO_READ;
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}

/** Applies `f` to `value`, or to what it resolves to if it is a Promise. */
function then<T, U>(value: T | PromiseLike<T>, f: (v: T) => U | PromiseLike<U>): U | PromiseLike<U> {
  return isThenable(value) ? Promise.resolve(value).then(f) : f(value);
}

/** What a read returns when the device has no read handler: all-ones, like an empty bus. */
function allOnes(size: number): bigint {
  return 2n ** BigInt(size * 8) - 1n;
}

function describe(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : `${String(value)} (${typeof value})`;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The largest number a read of 1, 2, 4 or 8 bytes can return (for 8, the largest exact one). */
const NUMBER_LIMIT: Record<number, number> = { 1: 0xff, 2: 0xffff, 4: 0xffff_ffff, 8: Number.MAX_SAFE_INTEGER };
const TWO_32 = 2 ** 32;

/** Checks a read handler's value against the access width; returns its low and high words. */
export function encodeReadValue(value: unknown, size: number): [number, number] {
  // The common case, a plain number that fits, needs no BigInt arithmetic.
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= (NUMBER_LIMIT[size] ?? -1)) {
    return value < TWO_32 ? [value, 0] : [value % TWO_32, Math.floor(value / TWO_32)];
  }
  const limit = allOnes(size);
  const range = `an integer from 0 to 0x${limit.toString(16)}`;
  let v: bigint;
  if (typeof value === 'number' && Number.isSafeInteger(value)) {
    v = BigInt(value);
  } else if (typeof value === 'bigint') {
    v = value;
  } else {
    throw new TypeError(`returned ${describe(value)}; expected ${range}`);
  }
  if (v < 0n || v > limit) {
    throw new TypeError(`returned ${describe(value)}, which does not fit in ${size} byte(s); expected ${range}`);
  }
  return [Number(v & 0xffff_ffffn), Number(v >> 32n)];
}

/** The value of a single write: a bigint for 8 bytes. */
function writtenValue(size: number, lo: number, hi: number): number | bigint {
  return size === 8 ? (BigInt(hi) << 32n) | BigInt(lo) : lo;
}

/** Reads element `i` of a string-I/O write. */
function element(data: Uint8Array, i: number, size: number): number {
  const view = new DataView(data.buffer, data.byteOffset + i * size, size);
  return size === 1 ? view.getUint8(0) : size === 2 ? view.getUint16(0, true) : view.getUint32(0, true);
}

/** How long the event loop may stay in one streak of polled accesses before yielding (ms). */
const HOT_BUDGET_MS = 1;

/** Numbers per access in a polled access's array (as in inline runs). */
const ACCESS_FIELDS = 9;
type AccessFields = [number, number, number, number, number, number, number, number, number];

/** How the bus reaches its machine and reports accesses. */
export interface BusOptions {
  /** Handler timeout (ms; 0 for none). */
  readonly timeoutMs: number;
  /** How long to poll for the next access after answering one (µs; 0 to never poll). */
  readonly spinMicros: number;
  /** Called for each access before its device handles it. */
  readonly observe: (e: NativeEvent) => void;
}

/** Routes accesses to TypeScript devices and answers the waiting vCPU. */
export class DeviceBus {
  readonly #machine: NativeMachine;
  readonly #handle: MachineHandle;
  readonly #timeoutMs: number;
  readonly #spinMicros: number;
  readonly #observe: (e: NativeEvent) => void;
  readonly #slot = new Float64Array(ACCESS_FIELDS);
  #hot = false;
  readonly #devices = new Map<number, Registered>();
  #nextId = 1;
  #failure: unknown;
  readonly #posted: NativePostedWrite[] = [];
  #pumping = false;
  readonly #idle: (() => void)[] = [];

  constructor(machine: NativeMachine, options: BusOptions) {
    this.#machine = machine;
    this.#handle = machine.handle();
    this.#timeoutMs = options.timeoutMs;
    this.#spinMicros = options.spinMicros;
    this.#observe = options.observe;
  }

  /** Registers `device` on `length` ports or MMIO bytes from `base`. */
  add(space: 'port' | 'mmio', base: number, length: number, device: Device): DeviceHandle {
    const id = this.#nextId++;
    const posted = device.posted === true;
    callNative(() => this.#machine.addDevice(space, base, length, device.name, id, posted));
    const handle: DeviceHandle = {
      name: device.name,
      space,
      base,
      length,
      remove: () => {
        if (this.#devices.delete(id)) {
          callNative(() => this.#machine.removeDevice(space, base));
        }
      },
    };
    this.#devices.set(id, { device, handle });
    return handle;
  }

  /** The exception of the handler that ended the run, if one did. */
  get failure(): unknown {
    return this.#failure;
  }

  /** Calls the device for one access (every element of string I/O); returns the answer or a Promise of it. */
  #call(device: Device, e: NativeEvent): Answer | PromiseLike<Answer> {
    const access: Access = { vcpu: e.vcpu, offset: e.offset, address: e.addr, size: e.size };
    const reading = isRead(e);
    const read = () => (device.read ? device.read(access) : allOnes(e.size));
    if (e.count === 1) {
      return reading
        ? then(read(), (v) => ({ word: encodeReadValue(v, e.size) }))
        : then(device.write?.(access, writtenValue(e.size, e.value, e.valueHi)), () => WRITTEN);
    }
    const data = e.data ?? Buffer.alloc(0);
    const out = Buffer.alloc(e.size * e.count);
    const step = (i: number): Answer | PromiseLike<Answer> => {
      for (; i < e.count; i++) {
        const at = i;
        const r = reading
          ? then(read(), (v) => {
              out.writeUIntLE(encodeReadValue(v, e.size)[0], at * e.size, e.size);
            })
          : device.write?.(access, element(data, at, e.size));
        if (isThenable(r)) {
          return Promise.resolve(r).then(() => step(at + 1));
        }
      }
      return reading ? { bytes: out } : WRITTEN;
    };
    return step(0);
  }

  #failMessage(e: { device: number }, what: string, error: unknown): string {
    this.#failure ??= error;
    const name = this.#devices.get(e.device)?.device.name ?? `#${e.device}`;
    return `device "${name}" ${what} handler failed: ${messageOf(error)}`;
  }

  #what(e: NativeEvent): 'read' | 'write' {
    return isRead(e) ? 'read' : 'write';
  }

  /**
   * Handles the notice of an access from a threaded vCPU: claims it (a poll may have taken
   * it already), hands it to its device after any posted writes still being handled, then
   * polls for the accesses that follow while they stream in. Never throws: failures stop
   * the machine.
   */
  dispatch(e: NativeEvent): void {
    if (this.#pumping) {
      void this.settled().then(() => this.dispatch(e));
      return;
    }
    const binding = native();
    if (!binding.claimAccess(this.#handle, e.vcpu, e.seq)) {
      return;
    }
    this.#observe(e);
    if (this.#dispatchNow(e)) {
      this.#pollStreak();
    }
  }

  /**
   * Polls for accesses after an answer, answering them on this turn of the event loop
   * instead of being woken for each, until none comes within `spinMicros`, a handler
   * answers with a Promise, or the streak has lasted HOT_BUDGET_MS (then other work runs).
   */
  #pollStreak(): void {
    if (this.#spinMicros === 0 || this.#hot) {
      return;
    }
    this.#hot = true;
    const binding = native();
    const deadline = performance.now() + HOT_BUDGET_MS;
    try {
      while (performance.now() < deadline) {
        const got = binding.pollAccess(this.#handle, this.#spinMicros, this.#slot);
        if (got === 0) {
          return;
        }
        const [vcpu, exit, device, offset, addr, size, count, value, valueHi] = this.#slot as unknown as AccessFields;
        const e: NativeEvent = { type: 0, vcpu, exit, device, offset, addr, size, count, seq: 0, value, valueHi };
        if (count > 1 && this.#what(e) === 'write') {
          e.data = binding.polledAccessData(this.#handle, vcpu);
        }
        this.#observe(e);
        if (got === 2) {
          // Writes posted before this access are handled before it.
          this.drainPosted();
          if (this.#pumping) {
            void this.settled().then(() => this.#dispatchNow(e));
            return;
          }
        }
        if (!this.#dispatchNow(e)) {
          return;
        }
      }
    } catch {
      // The machine closed under the streak; its end is reported elsewhere.
    } finally {
      this.#hot = false;
    }
  }

  /** Hands a claimed access to its device; returns whether it was answered synchronously. */
  #dispatchNow(e: NativeEvent): boolean {
    const fail = (error: unknown) => {
      try {
        this.#machine.fail(e.vcpu, this.#failMessage(e, this.#what(e), error));
      } catch {
        // The machine already stopped (a timeout raced the answer, or close() came first).
      }
    };
    const reply = (answer: Answer) => {
      if ('word' in answer) {
        native().replyAccess(this.#handle, e.vcpu, answer.word[0], answer.word[1]);
      } else {
        this.#machine.replyBytes(e.vcpu, answer.bytes);
      }
    };
    const registered = this.#devices.get(e.device);
    if (registered === undefined) {
      fail(new Error('the device was removed while the guest was using it'));
      return false;
    }
    let result: Answer | PromiseLike<Answer>;
    try {
      result = this.#call(registered.device, e);
    } catch (error) {
      fail(error);
      return false;
    }
    if (!isThenable(result)) {
      try {
        reply(result);
      } catch (error) {
        fail(error);
        return false;
      }
      return true;
    }
    let settled = false;
    const timer =
      this.#timeoutMs > 0
        ? setTimeout(() => {
            settled = true;
            fail(new Error(`no answer within ${this.#timeoutMs} ms (handlerTimeoutMs)`));
          }, this.#timeoutMs)
        : undefined;
    result.then(
      (answer) => {
        clearTimeout(timer);
        if (!settled) {
          settled = true;
          try {
            reply(answer);
          } catch (error) {
            fail(error);
          }
        }
      },
      (error: unknown) => {
        clearTimeout(timer);
        if (!settled) {
          settled = true;
          fail(error);
        }
      },
    );
    return false;
  }

  /**
   * Answers one access from an inline vCPU synchronously. Handlers must not return a Promise
   * here: nothing could run while the vCPU holds this thread.
   */
  answerNow(e: NativeEvent): Answer | { readonly fail: string } {
    const registered = this.#devices.get(e.device);
    const what = this.#what(e);
    if (registered === undefined) {
      return { fail: this.#failMessage(e, what, new Error('the device was removed while the guest was using it')) };
    }
    try {
      const result = this.#call(registered.device, e);
      if (isThenable(result)) {
        Promise.resolve(result).catch(() => {});
        throw new TypeError('returned a Promise; inline runs need handlers that answer synchronously');
      }
      return result;
    } catch (error) {
      return { fail: this.#failMessage(e, what, error) };
    }
  }

  /** Takes the writes the vCPUs posted and delivers them (see {@link deliverPosted}). */
  drainPosted(): void {
    let writes: NativePostedWrite[];
    try {
      writes = this.#machine.takePosted();
    } catch {
      return; // Closed: nothing is queued any more.
    }
    this.deliverPosted(writes);
  }

  /** Delivers posted writes in order; a handler that returns a Promise holds back the later ones. */
  deliverPosted(writes: readonly NativePostedWrite[]): void {
    this.#posted.push(...writes);
    if (!this.#pumping) {
      this.#pump();
    }
  }

  /** Resolves once every posted write delivered so far has been handled. */
  settled(): Promise<void> {
    return this.#pumping ? new Promise((resolve) => this.#idle.push(resolve)) : Promise.resolve();
  }

  /** Handles queued posted writes until the queue is empty or a handler answers with a Promise. */
  #pump(): void {
    this.#pumping = true;
    for (let w = this.#posted.shift(); w !== undefined; w = this.#posted.shift()) {
      const write = w;
      let r: unknown;
      try {
        const access: Access = { vcpu: write.vcpu, offset: write.offset, address: write.addr, size: write.size };
        r = this.#devices
          .get(write.device)
          ?.device.write?.(access, writtenValue(write.size, write.value, write.valueHi));
      } catch (error) {
        this.#failPosted(write, error);
        continue;
      }
      if (isThenable(r)) {
        Promise.resolve(r).then(
          () => this.#pump(),
          (error: unknown) => {
            this.#failPosted(write, error);
            this.#pump();
          },
        );
        return;
      }
    }
    this.#pumping = false;
    for (const resolve of this.#idle.splice(0)) {
      resolve();
    }
  }

  /** Stops the machine for a failed posted write; the writes queued after it are dropped. */
  #failPosted(write: NativePostedWrite, error: unknown): void {
    this.#posted.length = 0;
    try {
      this.#machine.failPosted(write.vcpu, write.exit, write.addr, this.#failMessage(write, 'write', error));
    } catch {
      // The machine is already closed.
    }
  }
}
