/**
 * Guest RAM as seen from TypeScript.
 * @module
 */
import { callNative, KvmkitError } from './errors.js';
import type { NativeMemory } from './native.js';
import { bytes, address as checkAddress, unsigned, wholeNumber } from './validate.js';

/** One region of guest RAM. */
export interface RamRegion {
  /** Guest-physical start address. */
  readonly guestAddr: number;
  /** Size in bytes. */
  readonly size: number;
}

/**
 * Reads and writes guest-physical memory. Every access must lie inside one RAM region;
 * otherwise a `GUEST_MEMORY_RANGE` error is thrown and nothing is written. Arguments of the
 * wrong type, and values that do not fit the width written, throw `INVALID_ARGUMENT`.
 * @example
 * ```ts
 * vm.memory.write(0x1000, Uint8Array.of(0xf4)); // hlt
 * vm.memory.writeU32(0x2000, 0xdead_beef);
 * vm.memory.readU32(0x2000); // 0xdeadbeef
 * ```
 */
export class GuestMemory {
  readonly #native: NativeMemory;
  readonly #views = new Map<number, Uint8Array>();

  /** The RAM regions, in address order. */
  readonly regions: readonly RamRegion[];

  /** @internal */
  constructor(native: NativeMemory) {
    this.#native = native;
    this.regions = callNative(() => native.regions());
  }

  /**
   * The fd of the memfd or file backing guest RAM (`backing` option), for sharing it with
   * another process; `undefined` for anonymous memory or after close. Regions lie in it one
   * after another, in address order.
   */
  get fd(): number | undefined {
    return this.#native.fd ?? undefined;
  }

  /**
   * A zero-copy view of guest memory at `address`: reads see what the guest wrote, writes
   * reach the guest at once, with no copy. The range must lie inside one region. Views stay
   * valid for as long as they are referenced, even after the machine closes: they then
   * show the guest's last memory and reach no guest (the mapping is released when the last
   * view is garbage-collected). Views cannot be made after close.
   */
  view(address: number, length: number): Uint8Array {
    checkAddress(address, 'address');
    wholeNumber(length, 'length', 0, Number.MAX_SAFE_INTEGER);
    if (this.#native.closed) {
      throw new KvmkitError('INVALID_STATE', 'cannot make a memory view: the machine is closed');
    }
    const index = this.regions.findIndex((r) => address >= r.guestAddr && address + length <= r.guestAddr + r.size);
    const region = this.regions[index];
    if (region === undefined || length < 0) {
      throw new KvmkitError(
        'GUEST_MEMORY_RANGE',
        `guest memory view of ${length} bytes at 0x${address.toString(16)} is outside guest RAM (it must lie within one memory region)`,
      );
    }
    let whole = this.#views.get(index);
    if (whole === undefined) {
      whole = callNative(() => this.#native.view(index));
      this.#views.set(index, whole);
    }
    return whole.subarray(address - region.guestAddr, address - region.guestAddr + length);
  }

  /** Copies `data` into guest memory at `address`. */
  write(address: number, data: Uint8Array): void {
    checkAddress(address, 'address');
    bytes(data, 'data');
    const buffer = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    callNative(() => this.#native.write(address, buffer));
  }

  /** Reads `length` bytes of guest memory at `address`. */
  read(address: number, length: number): Uint8Array {
    checkAddress(address, 'address');
    wholeNumber(length, 'length', 0, Number.MAX_SAFE_INTEGER);
    return callNative(() => this.#native.read(address, length));
  }

  #view(address: number, length: number): DataView {
    const bytes = this.read(address, length);
    return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Writes `value`, which must fit in `length` bytes, little-endian. */
  #put(address: number, length: 1 | 2 | 4 | 8, value: unknown, fill: (view: DataView, value: never) => void): void {
    const checked = unsigned(value, 'value', (length * 8) as 8 | 16 | 32 | 64);
    const data = new Uint8Array(length);
    fill(new DataView(data.buffer), (length === 8 ? BigInt(checked) : checked) as never);
    this.write(address, data);
  }

  /** Reads a byte. */
  readU8(address: number): number {
    return this.#view(address, 1).getUint8(0);
  }

  /** Reads a little-endian 16-bit value. */
  readU16(address: number): number {
    return this.#view(address, 2).getUint16(0, true);
  }

  /** Reads a little-endian 32-bit value. */
  readU32(address: number): number {
    return this.#view(address, 4).getUint32(0, true);
  }

  /** Reads a little-endian 64-bit value. */
  readU64(address: number): bigint {
    return this.#view(address, 8).getBigUint64(0, true);
  }

  /** Writes a byte. */
  writeU8(address: number, value: number): void {
    this.#put(address, 1, value, (v, x: number) => v.setUint8(0, x));
  }

  /** Writes a little-endian 16-bit value. */
  writeU16(address: number, value: number): void {
    this.#put(address, 2, value, (v, x: number) => v.setUint16(0, x, true));
  }

  /** Writes a little-endian 32-bit value. */
  writeU32(address: number, value: number): void {
    this.#put(address, 4, value, (v, x: number) => v.setUint32(0, x, true));
  }

  /** Writes a little-endian 64-bit value (a bigint, or a number up to 2^53-1). */
  writeU64(address: number, value: bigint | number): void {
    this.#put(address, 8, value, (v, x: bigint) => v.setBigUint64(0, x, true));
  }
}
