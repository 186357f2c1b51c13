/**
 * The TypeScript side of the device bus: registered devices, and the dispatch of each access
 * a vCPU is waiting on to its device's handler.
 * @module
 */
import type { Access, Device, DeviceHandle } from './devices.js';
import { callNative } from './errors.js';
import type { NativeEvent, NativeMachine } from './native.js';

/** `ExitKind` indices of the Rust core. */
const IO_IN = 0;
const MMIO_READ = 2;

interface Registered {
  readonly device: Device;
  readonly handle: DeviceHandle;
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}

/** What a read returns when the device has no read handler: all-ones, like an empty bus. */
function allOnes(size: number): bigint {
  return 2n ** BigInt(size * 8) - 1n;
}

function describe(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : `${String(value)} (${typeof value})`;
}

/** Checks a read handler's value against the access width; returns its low and high words. */
export function encodeReadValue(value: unknown, size: number): [number, number] {
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

/** Reads element `i` of a string-I/O write. */
function element(data: Uint8Array, i: number, size: number): number {
  const view = new DataView(data.buffer, data.byteOffset + i * size, size);
  return size === 1 ? view.getUint8(0) : size === 2 ? view.getUint16(0, true) : view.getUint32(0, true);
}

/** Routes accesses to TypeScript devices and answers the waiting vCPU. */
export class DeviceBus {
  readonly #machine: NativeMachine;
  readonly #timeoutMs: number;
  readonly #devices = new Map<number, Registered>();
  #nextId = 1;
  #failure: unknown;

  constructor(machine: NativeMachine, timeoutMs: number) {
    this.#machine = machine;
    this.#timeoutMs = timeoutMs;
  }

  /** Registers `device` on `length` ports or MMIO bytes from `base`. */
  add(space: 'port' | 'mmio', base: number, length: number, device: Device): DeviceHandle {
    const id = this.#nextId++;
    callNative(() => this.#machine.addDevice(space, base, length, device.name, id));
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

  /** Hands one access to its device. Never throws: failures stop the machine instead. */
  dispatch(e: NativeEvent): void {
    const registered = this.#devices.get(e.device);
    if (registered === undefined) {
      this.#fail(e.vcpu, `device #${e.device} was removed while the guest was using it`, undefined);
      return;
    }
    const { device } = registered;
    const access: Access = { vcpu: e.vcpu, offset: e.offset, address: e.addr, size: e.size };
    const isRead = e.exit === IO_IN || e.exit === MMIO_READ;
    if (e.count > 1) {
      this.#guard(registered, e.vcpu, isRead ? 'read' : 'write', () => this.#stringIo(device, access, e, isRead));
    } else if (isRead) {
      this.#guard(
        registered,
        e.vcpu,
        'read',
        () => (device.read ? device.read(access) : allOnes(e.size)),
        (value) => {
          const [lo, hi] = encodeReadValue(value, e.size);
          this.#machine.reply(e.vcpu, lo, hi);
        },
      );
    } else {
      const value = e.size === 8 ? (BigInt(e.valueHi) << 32n) | BigInt(e.value) : e.value;
      this.#guard(
        registered,
        e.vcpu,
        'write',
        () => device.write?.(access, value),
        () => this.#machine.reply(e.vcpu, 0, 0),
      );
    }
  }

  /** Calls `run`, then `answer` with its result (awaited if it is a Promise), failing the vCPU on any error. */
  #guard(
    registered: Registered,
    vcpu: number,
    what: 'read' | 'write',
    run: () => unknown,
    answer: (value: unknown) => void = () => {},
  ): void {
    const name = registered.device.name;
    const fail = (error: unknown) => {
      const reason = error instanceof Error ? error.message : String(error);
      this.#fail(vcpu, `device "${name}" ${what} handler failed: ${reason}`, error);
    };
    let result: unknown;
    try {
      result = run();
    } catch (error) {
      fail(error);
      return;
    }
    if (!isThenable(result)) {
      try {
        answer(result);
      } catch (error) {
        fail(error);
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
    result.then(
      (value) => {
        clearTimeout(timer);
        if (!settled) {
          settled = true;
          try {
            answer(value);
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
  }

  /** String I/O: one handler call per element, in order; reads are answered all at once. */
  #stringIo(device: Device, access: Access, e: NativeEvent, isRead: boolean): unknown {
    const data = e.data ?? Buffer.alloc(0);
    const out = Buffer.alloc(e.size * e.count);
    const step = (i: number): unknown => {
      for (; i < e.count; i++) {
        const r = isRead
          ? device.read
            ? device.read(access)
            : allOnes(e.size)
          : device.write?.(access, element(data, i, e.size));
        const store = (value: unknown) => {
          if (isRead) {
            const [lo] = encodeReadValue(value, e.size);
            out.writeUIntLE(lo, i * e.size, e.size);
          }
        };
        if (isThenable(r)) {
          const next = i + 1;
          return Promise.resolve(r).then((value) => {
            store(value);
            return step(next);
          });
        }
        store(r);
      }
      return undefined;
    };
    const finish = () => (isRead ? this.#machine.replyBytes(e.vcpu, out) : this.#machine.reply(e.vcpu, 0, 0));
    const result = step(0);
    return isThenable(result) ? Promise.resolve(result).then(finish) : finish();
  }

  #fail(vcpu: number, message: string, cause: unknown): void {
    this.#failure ??= cause;
    try {
      this.#machine.fail(vcpu, message);
    } catch {
      // The machine already stopped (a timeout raced the answer, or close() came first).
    }
  }
}
