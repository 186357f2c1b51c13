/**
 * Guest RAM as seen from TypeScript.
 * @module
 */
import { callNative, KvmkitError } from './errors.js';
import type { NativeMemory } from './native.js';

/** One region of guest RAM. */
export interface RamRegion {
  /** Guest-physical start address. */
  readonly guestAddr: number;
  /** Size in bytes. */
  readonly size: number;
}

/**
 * Reads and writes guest-physical memory. Every access must lie inside one RAM region;
 * otherwise a `GUEST_MEMORY_RANGE` error is thrown and nothing is written.
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
    const buffer = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    callNative(() => this.#native.write(address, buffer));
  }

  /** Reads `length` bytes of guest memory at `address`. */
  read(address: number, length: number): Uint8Array {
    return callNative(() => this.#native.read(address, length));
  }

  #view(address: number, length: number): DataView {
    const bytes = this.read(address, length);
    return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  #put(address: number, length: number, fill: (view: DataView) => void): void {
    const bytes = new Uint8Array(length);
    fill(new DataView(bytes.buffer));
    this.write(address, bytes);
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
    this.#put(address, 1, (v) => v.setUint8(0, value));
  }

  /** Writes a little-endian 16-bit value. */
  writeU16(address: number, value: number): void {
    this.#put(address, 2, (v) => v.setUint16(0, value, true));
  }

  /** Writes a little-endian 32-bit value. */
  writeU32(address: number, value: number): void {
    this.#put(address, 4, (v) => v.setUint32(0, value, true));
  }

  /** Writes a little-endian 64-bit value. */
  writeU64(address: number, value: bigint): void {
    this.#put(address, 8, (v) => v.setBigUint64(0, value, true));
  }
}
