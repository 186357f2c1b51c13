/**
 * The hand-off of guest accesses to TypeScript devices: the registered devices, and the one
 * consumer of the native wire format — a slot of numbers per record, whose layout the
 * binding exports (`SLOT_*`), decoded by {@link decodeAccess}. An access is answered
 * asynchronously (threaded vCPUs: a doorbell event, then a streak of accesses answered with
 * one argument-less native call each, the binding's `serveReply`), synchronously (inline vCPUs: {@link Handoff.runInline}
 * is the inline run loop), or not at all (posted writes, taken in batches).
 *
 * Native calls are free functions, which napi calls with less overhead than class methods,
 * and take the machine's handle — except the hot ones, a streak's reply and an inline run's
 * step, which take no arguments at all and are plain Node-API functions ({@link hotCalls}).
 * @module
 */
// Imported: Node 20's global `performance` is a lazy accessor, a getter call on every use.
import { performance } from 'node:perf_hooks';
import type { Access, Device, DeviceHandle } from './devices.js';
import { callNative } from './errors.js';
import { type NativeMachine, native } from './native.js';

/** The handle every hand-off call takes. */
type MachineHandle = ReturnType<NativeMachine['handle']>;
/** The handle of an inline run. */
type InlineRun = ReturnType<NativeMachine['startInline']>;

/** The slot layout and codes the binding exports, read once. */
interface Protocol {
  readonly fields: number;
  readonly kind: number;
  readonly vcpu: number;
  readonly exit: number;
  readonly device: number;
  readonly offset: number;
  readonly addr: number;
  readonly size: number;
  readonly count: number;
  readonly value: number;
  readonly valueHi: number;
  readonly ioIn: number;
  readonly ioOut: number;
  readonly mmioRead: number;
  readonly mmioWrite: number;
  readonly pollNone: number;
  readonly pollAfterPosted: number;
}

let cached: Protocol | undefined;

/** The binding's wire-format constants. */
function protocol(): Protocol {
  if (cached === undefined) {
    const b = native();
    cached = {
      fields: b.SLOT_FIELDS,
      kind: b.SLOT_KIND,
      vcpu: b.SLOT_VCPU,
      exit: b.SLOT_EXIT,
      device: b.SLOT_DEVICE,
      offset: b.SLOT_OFFSET,
      addr: b.SLOT_ADDR,
      size: b.SLOT_SIZE,
      count: b.SLOT_COUNT,
      value: b.SLOT_VALUE,
      valueHi: b.SLOT_VALUE_HI,
      ioIn: b.EXIT_IO_IN,
      ioOut: b.EXIT_IO_OUT,
      mmioRead: b.EXIT_MMIO_READ,
      mmioWrite: b.EXIT_MMIO_WRITE,
      pollNone: b.POLL_NONE,
      pollAfterPosted: b.POLL_ACCESS_AFTER_POSTED,
    };
  }
  return cached;
}

/** The binding's hot calls, plain Node-API functions made once per thread. */
interface HotCalls {
  /** An inline run's step (`inlineStepper`). */
  readonly inlineStep: () => boolean;
  /** A streak's reply (`serveReplier`). */
  readonly serveReply: () => number;
}

let hot: HotCalls | undefined;

/**
 * The binding's hot calls for this thread: the same function objects for every machine, so
 * that the optimizing compiler sees one target at each call site and calls it directly.
 */
function hotCalls(): HotCalls {
  if (hot === undefined) {
    const b = native();
    hot = { inlineStep: b.inlineStepper(), serveReply: b.serveReplier() };
  }
  return hot;
}

/** One record as a slot carries it; it is also the {@link Access} its device's handler gets. */
export interface SlotRecord extends Access {
  /** `RECORD_ACCESS` or `RECORD_POSTED_WRITE`. */
  readonly kind: number;
  /** The exit kind (`EXIT_*`). */
  readonly exit: number;
  /** The device's registration id. */
  readonly device: number;
  /** Repeat count of string I/O (its bytes are fetched separately), 1 otherwise. */
  readonly count: number;
  /** Low 32 bits of a single write's value. */
  readonly value: number;
  /** High 32 bits of a single write's value. */
  readonly valueHi: number;
}

/** Decodes the record in `slot` from element `at` (the one decoder of the wire format). */
export function decodeAccess(slot: Float64Array, at = 0): SlotRecord {
  const p = protocol();
  const f = (field: number) => slot[at + field] ?? 0;
  return {
    kind: f(p.kind),
    vcpu: f(p.vcpu),
    exit: f(p.exit),
    device: f(p.device),
    offset: f(p.offset),
    address: f(p.addr),
    size: f(p.size),
    count: f(p.count),
    value: f(p.value),
    valueHi: f(p.valueHi),
  };
}

/** Whether the guest is reading (port in or MMIO read). */
function isRead(r: SlotRecord): boolean {
  const p = protocol();
  return r.exit === p.ioIn || r.exit === p.mmioRead;
}

/** `port` or `mmio`, and `read` or `write`, of an access. */
export function describeAccess(r: SlotRecord): { kind: 'read' | 'write'; space: 'port' | 'mmio' } {
  const p = protocol();
  return {
    kind: isRead(r) ? 'read' : 'write',
    space: r.exit === p.ioIn || r.exit === p.ioOut ? 'port' : 'mmio',
  };
}

interface Registered {
  readonly device: Device;
  readonly handle: DeviceHandle;
}

/** A handler's answer, ready for the vCPU: a value of up to 8 bytes, or string-I/O bytes. */
export type Answer = { readonly word: readonly [number, number] } | { readonly bytes: Buffer };

const WRITTEN: Answer = { word: [0, 0] };

/** Leaves vCPU `vcpu`'s value answer `word` in `slot`, where the argument-less calls take it. */
function putAnswer(slot: Float64Array, vcpu: number, word: readonly [number, number]): void {
  const p = protocol();
  slot[p.vcpu] = vcpu;
  slot[p.value] = word[0];
  slot[p.valueHi] = word[1];
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
function writtenValue(r: SlotRecord): number | bigint {
  return r.size === 8 ? (BigInt(r.valueHi) << 32n) | BigInt(r.value) : r.value;
}

/** Reads element `i` of a string-I/O write. */
function element(data: Uint8Array, i: number, size: number): number {
  const view = new DataView(data.buffer, data.byteOffset + i * size, size);
  return size === 1 ? view.getUint8(0) : size === 2 ? view.getUint16(0, true) : view.getUint32(0, true);
}

/** How long the event loop may stay in one streak of polled accesses before yielding (ms). */
const HOT_BUDGET_MS = 1;

/**
 * How many accesses (or posted writes) a streak serves before it yields, unless they took
 * HOT_CEILING_MS: where exits are slow (~150 µs on the nested test machine, against ~8 µs
 * here), a turn of the event loop every few exits cost more than the exits themselves.
 */
const HOT_MIN_ACCESSES = 32;

/** How long a streak may hold the event loop however few accesses it served (ms). */
const HOT_CEILING_MS = 5;

/** Whether a streak that started at `started` (`performance.now()`) and served `served` should yield. */
function outOfBudget(started: number, served: number): boolean {
  const held = performance.now() - started;
  return held >= HOT_BUDGET_MS && (served >= HOT_MIN_ACCESSES || held >= HOT_CEILING_MS);
}

/** How the hand-off reaches its machine and reports accesses. */
export interface HandoffOptions {
  /** Handler timeout (ms; 0 for none). */
  readonly timeoutMs: number;
  /** How long to wait for the next access after answering one (µs; 0 to not wait). */
  readonly spinMicros: number;
  /** Called for each access before its device handles it, with the device's name. */
  readonly observe: (r: SlotRecord, device: string) => void;
}

/** Routes accesses to TypeScript devices and answers the waiting vCPU. */
export class Handoff {
  readonly #machine: NativeMachine;
  readonly #handle: MachineHandle;
  readonly #timeoutMs: number;
  readonly #spinMicros: number;
  readonly #report: (r: SlotRecord, device: string) => void;
  readonly #slot: Float64Array;
  #hot = false;
  /** By registration id (ids are small and dense: an array indexes faster than a Map). */
  readonly #devices: (Registered | undefined)[] = [];
  #nextId = 1;
  #failure: unknown;
  readonly #posted: SlotRecord[] = [];
  #pumping = false;
  readonly #idle: (() => void)[] = [];

  /**
   * Whether anyone wants to see accesses: kept up to date by the machine (read on every
   * access, so a field rather than a question to the event emitter).
   */
  observing = false;

  constructor(machine: NativeMachine, options: HandoffOptions) {
    this.#machine = machine;
    this.#handle = machine.handle();
    this.#timeoutMs = options.timeoutMs;
    this.#spinMicros = options.spinMicros;
    this.#report = options.observe;
    this.#slot = new Float64Array(protocol().fields);
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
        if (this.#devices[id] !== undefined) {
          this.#devices[id] = undefined;
          callNative(() => this.#machine.removeDevice(space, base));
        }
      },
    };
    this.#devices[id] = { device, handle };
    return handle;
  }

  /** The exception of the handler that ended the run, if one did. */
  get failure(): unknown {
    return this.#failure;
  }

  #name(r: SlotRecord): string {
    return this.#devices[r.device]?.device.name ?? `#${r.device}`;
  }

  /** Reports an access about to be handled, if anyone is observing. */
  #observe(r: SlotRecord): void {
    if (this.observing) {
      this.#report(r, this.#name(r));
    }
  }

  /** Calls the device for one access (every element of string I/O); returns the answer or a Promise of it. */
  #call(device: Device, r: SlotRecord, data: Buffer | undefined): Answer | PromiseLike<Answer> {
    const reading = isRead(r);
    if (r.count === 1) {
      // The common case, spelled out so that a synchronous answer allocates no closure.
      if (reading) {
        const value = device.read ? device.read(r) : allOnes(r.size);
        return isThenable(value)
          ? Promise.resolve(value).then((v) => ({ word: encodeReadValue(v, r.size) }))
          : { word: encodeReadValue(value, r.size) };
      }
      const written = device.write?.(r, writtenValue(r));
      return isThenable(written) ? Promise.resolve(written).then(() => WRITTEN) : WRITTEN;
    }
    const read = () => (device.read ? device.read(r) : allOnes(r.size));
    const bytes = data ?? Buffer.alloc(0);
    const out = Buffer.alloc(r.size * r.count);
    const step = (i: number): Answer | PromiseLike<Answer> => {
      for (; i < r.count; i++) {
        const at = i;
        const result = reading
          ? then(read(), (v) => {
              out.writeUIntLE(encodeReadValue(v, r.size)[0], at * r.size, r.size);
            })
          : device.write?.(r, element(bytes, at, r.size));
        if (isThenable(result)) {
          return Promise.resolve(result).then(() => step(at + 1));
        }
      }
      return reading ? { bytes: out } : WRITTEN;
    };
    return step(0);
  }

  #failMessage(r: SlotRecord, error: unknown): string {
    this.#failure ??= error;
    return `device "${this.#name(r)}" ${isRead(r) ? 'read' : 'write'} handler failed: ${messageOf(error)}`;
  }

  /** Calls the access's device; a missing device or a throwing handler becomes a failure. */
  #answer(r: SlotRecord, data: Buffer | undefined): Answer | PromiseLike<Answer> | { readonly fail: string } {
    const registered = this.#devices[r.device];
    if (registered === undefined) {
      return { fail: this.#failMessage(r, new Error('the device was removed while the guest was using it')) };
    }
    try {
      return this.#call(registered.device, r, data);
    } catch (error) {
      return { fail: this.#failMessage(r, error) };
    }
  }

  /**
   * Handles an access doorbell from a threaded vCPU: takes the access (unless a streak took
   * it already) after any posted writes still being handled, and serves the accesses that
   * follow while they stream in. Never throws: failures stop the machine.
   */
  onDoorbell(): void {
    if (this.#pumping) {
      void this.settled().then(() => this.onDoorbell());
      return;
    }
    if (this.#hot) {
      return;
    }
    this.#streak(() => native().servePoll(0));
  }

  /**
   * Runs a streak: serves the machine on this thread (`serveBegin`, so that the calls of the
   * streak take no arguments), starts with `first`'s POLL_* result and serves what follows.
   * If `first` throws, the access `failing` (if given) fails with its error.
   */
  #streak(first: () => number, failing?: SlotRecord): void {
    const binding = native();
    try {
      binding.serveBegin(this.#handle, this.#slot, this.#spinMicros);
    } catch {
      return; // Closed: the end is reported elsewhere.
    }
    this.#hot = true;
    try {
      let got: number;
      try {
        got = first();
      } catch (error) {
        if (failing !== undefined) {
          binding.failAccess(this.#handle, failing.vcpu, this.#failMessage(failing, error));
        }
        return;
      }
      this.#serve(got);
    } catch {
      // The machine closed under the streak; its end is reported elsewhere.
    } finally {
      this.#hot = false;
      binding.serveEnd();
    }
  }

  /**
   * Serves the access `got` put in the slot, and the ones that follow, on this turn of the
   * event loop: each synchronous answer goes back in the same call that waits for the next
   * access. The streak ends when none comes within `spinMicros` or a handler answers with a
   * Promise; once its budget is spent ({@link outOfBudget}) it continues on the next turn of
   * the event loop, so other work runs in between. Only inside {@link Handoff.#streak}.
   */
  #serve(got: number): void {
    const p = protocol();
    const binding = native();
    const slot = this.#slot;
    const reply = hotCalls().serveReply;
    const started = performance.now();
    let served = 0;
    while (got !== p.pollNone) {
      const r = decodeAccess(slot);
      const data = r.count > 1 && !isRead(r) ? binding.accessData(this.#handle, r.vcpu) : undefined;
      this.#observe(r);
      if (got === p.pollAfterPosted) {
        // Writes posted before this access are handled before it.
        this.drainPosted();
        if (this.#pumping) {
          void this.settled().then(() => this.#finish(r, this.#answer(r, data)));
          return;
        }
      }
      const answer = this.#answer(r, data);
      if (isThenable(answer) || 'fail' in answer) {
        this.#finish(r, answer);
        return;
      }
      if ('word' in answer) {
        putAnswer(slot, r.vcpu, answer.word);
        got = reply();
      } else {
        binding.replyBytes(this.#handle, r.vcpu, answer.bytes);
        got = binding.servePoll(this.#spinMicros);
      }
      served += 1;
      if (got !== p.pollNone && outOfBudget(started, served)) {
        // Out of budget with an access in hand: serve it on the next turn, after other
        // work, without waiting for a doorbell.
        const next = got;
        const saved = Float64Array.from(slot);
        setImmediate(() => {
          this.#slot.set(saved);
          this.#streak(() => next);
        });
        return;
      }
    }
  }

  /** Delivers an answer that is a failure or a Promise; a settled Promise resumes the streak. */
  #finish(r: SlotRecord, answer: Answer | PromiseLike<Answer> | { readonly fail: string }): void {
    const fail = (error: unknown) => {
      try {
        native().failAccess(this.#handle, r.vcpu, this.#failMessage(r, error));
      } catch {
        // The machine already stopped (a timeout raced the answer, or close() came first).
      }
    };
    if (!isThenable(answer)) {
      if ('fail' in answer) {
        try {
          native().failAccess(this.#handle, r.vcpu, answer.fail);
        } catch {
          // As above.
        }
      } else {
        this.#reply(r, answer);
      }
      return;
    }
    let settled = false;
    const timer =
      this.#timeoutMs > 0
        ? setTimeout(() => {
            settled = true;
            fail(new Error(`no answer within ${this.#timeoutMs} ms (handlerTimeoutMs)`));
          }, this.#timeoutMs)
        : undefined;
    answer.then(
      (value) => {
        clearTimeout(timer);
        if (!settled) {
          settled = true;
          this.#reply(r, value);
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
  }

  /** Answers after a Promise settled (no streak runs then), and serves what comes next. */
  #reply(r: SlotRecord, answer: Answer): void {
    const binding = native();
    this.#streak(() => {
      if ('word' in answer) {
        putAnswer(this.#slot, r.vcpu, answer.word);
        return hotCalls().serveReply();
      }
      binding.replyBytes(this.#handle, r.vcpu, answer.bytes);
      return binding.servePoll(this.#spinMicros);
    }, r);
  }

  /**
   * Runs an inline run's vCPU 0 on this thread until its run ends, answering each access
   * synchronously in the same native call that runs the guest to its next one. Per exit,
   * this side allocates only the record its handler receives (and a read's answer).
   */
  runInline(run: InlineRun): void {
    const binding = native();
    const p = protocol();
    // The binding's memory: each step writes the next access here and takes the vCPU and
    // a value answer from it, so a step's call carries no arguments.
    const slot = binding.inlineBegin(run);
    const step = hotCalls().inlineStep;
    try {
      slot[p.vcpu] = 0;
      let more = step();
      while (more) {
        const r = decodeAccess(slot);
        const data = r.count > 1 && !isRead(r) ? binding.inlineAccessData() : undefined;
        this.#observe(r);
        let answer = this.#answer(r, data);
        if (isThenable(answer)) {
          Promise.resolve(answer).catch(() => {});
          answer = {
            fail: this.#failMessage(
              r,
              new TypeError('returned a Promise; inline runs need handlers that answer synchronously'),
            ),
          };
        }
        if ('word' in answer) {
          putAnswer(slot, r.vcpu, answer.word);
          more = step();
        } else {
          more = 'fail' in answer ? binding.inlineFail(answer.fail) : binding.inlineStepBytes(answer.bytes);
        }
      }
    } finally {
      binding.inlineEnd();
    }
  }

  /** Handles a posted-writes doorbell: drains them as a streak (see {@link Handoff.drainPosted}). */
  onPostedDoorbell(): void {
    this.drainPosted(this.#spinMicros);
  }

  /**
   * Takes the queued posted writes and handles them in order. With `spinMicros` (a
   * doorbell's drain), it is a streak: after each batch it waits up to that long for more,
   * and vCPUs do not ring for writes meanwhile, so a guest streaming writes costs no
   * doorbell per write while this keeps up. The streak ends when none comes in time, a
   * handler answers with a Promise, an access waits, or its budget is spent ({@link outOfBudget}).
   */
  drainPosted(spinMicros = 0): void {
    const binding = native();
    const fields = protocol().fields;
    const started = performance.now();
    let taken = 0;
    try {
      for (;;) {
        const batch = binding.takePosted(this.#handle, spinMicros);
        for (let at = 0; at < batch.length; at += fields) {
          this.#posted.push(decodeAccess(batch, at));
        }
        taken += batch.length / fields;
        if (!this.#pumping) {
          this.#pump();
        }
        if (batch.length === 0 || spinMicros === 0 || this.#pumping || outOfBudget(started, taken)) {
          break;
        }
      }
    } catch {
      // Closed: nothing is queued any more.
    } finally {
      try {
        binding.endPostedStreak(this.#handle);
      } catch {
        // Closed.
      }
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
      let result: unknown;
      try {
        result = this.#devices[write.device]?.device.write?.(write, writtenValue(write));
      } catch (error) {
        this.#failPosted(write, error);
        continue;
      }
      if (isThenable(result)) {
        Promise.resolve(result).then(
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
  #failPosted(write: SlotRecord, error: unknown): void {
    this.#posted.length = 0;
    try {
      native().failPosted(this.#handle, write.vcpu, write.exit, write.address, this.#failMessage(write, error));
    } catch {
      // The machine is already closed.
    }
  }
}
