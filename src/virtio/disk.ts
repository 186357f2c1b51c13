/**
 * virtio-blk disks: an image file (raw, read-only, or under a copy-on-write overlay), a disk
 * held in a `Uint8Array`, or one served by your own {@link BlockBackend}.
 * @module
 */
import { ArgumentError, ConfigError, callNative } from '../errors.js';
import type { VirtioDeviceInfo } from '../machine.js';
import type { GuestMemory } from '../memory.js';
import type { NativeBlockRequest, NativeDisk, NativeMachine } from '../native.js';
import { parseSize, type Size } from '../size.js';
import { boolean, bytes, describe, object, text } from '../validate.js';

/** The size of a sector: `sector` arguments count these. */
export const SECTOR_SIZE = 512;

/**
 * A disk served by your code. Each method gets the first sector and the guest's buffers, in
 * order, as zero-copy views of guest memory (see {@link GuestMemory.view}): fill them
 * (`read`) or take their bytes (`write`) before the promise settles, and keep no reference
 * after. Requests reach it in batches, several may be in flight at once, and the guest sees
 * a rejected promise (or a throw) as an I/O error.
 *
 * With `discard` or `writeZeroes`, a writable disk offers the guest those requests
 * (`VIRTIO_BLK_F_DISCARD`, `VIRTIO_BLK_F_WRITE_ZEROES`: `fstrim`, `blkdiscard`); the device
 * checks each range against the disk and its limits first, so the methods only get ranges
 * that lie on the disk.
 * @example
 * ```ts
 * const sectors = new Map<bigint, Uint8Array>(); // a sparse disk
 * const backend: BlockBackend = {
 *   async read(sector, buffers) {
 *     for (const b of buffers) for (let i = 0; i < b.length; i += 512, sector++) b.set(sectors.get(sector) ?? new Uint8Array(512), i);
 *   },
 *   async write(sector, buffers) {
 *     for (const b of buffers) for (let i = 0; i < b.length; i += 512, sector++) sectors.set(sector, b.slice(i, i + 512));
 *   },
 * };
 * vm.addDisk({ backend, size: '1G' });
 * ```
 */
export interface BlockBackend {
  /** Fills `buffers` from the disk, starting at `sector`. */
  read(sector: bigint, buffers: Uint8Array[]): Promise<void>;
  /** Writes `buffers` to the disk, starting at `sector`. */
  write(sector: bigint, buffers: Uint8Array[]): Promise<void>;
  /** Makes completed writes durable (absent: flushes succeed at once). */
  flush?(): Promise<void>;
  /**
   * The guest no longer needs `count` sectors from `sector` (at most 2^22 per call): their
   * content may become anything. Absent: the guest is not offered discard.
   */
  discard?(sector: bigint, count: number): Promise<void>;
  /**
   * Makes `count` sectors from `sector` read as zeroes (at most 2^16 per call); with
   * `unmap`, their space may be freed as well. Absent: the guest is not offered write-zeroes.
   */
  writeZeroes?(sector: bigint, count: number, options: { unmap: boolean }): Promise<void>;
}

/** What every disk may say besides where its data lives. */
export interface DiskCommonOptions {
  /** Offer the disk read-only (`VIRTIO_BLK_F_RO`); any write fails in the guest. */
  readOnly?: boolean;
  /** The serial the guest reads (`/sys/block/vda/serial`), up to 20 bytes. */
  serial?: string;
}

/** A disk image file: raw, of a whole number of 512-byte sectors (a block device works too). */
export interface FileDiskOptions extends DiskCommonOptions {
  /** The image. */
  path: string;
  /**
   * Keep the image untouched and send writes to a copy-on-write overlay: `true` for a
   * temporary file that vanishes with the machine, or the path of an overlay file (created
   * empty if missing; an existing one is reused, so it must have been made over this
   * image). Many machines can share one image this way.
   */
  overlay?: boolean | string;
}

/** A disk held in memory: the guest reads and writes `data` itself. */
export interface MemoryDiskOptions extends DiskCommonOptions {
  /** The disk's bytes, a whole number of 512-byte sectors. */
  data: Uint8Array;
}

/** A disk served by your code. */
export interface BackendDiskOptions extends DiskCommonOptions {
  /** Serves the requests. */
  backend: BlockBackend;
  /** The disk's size: bytes, or a string like `"1G"`; a whole number of 512-byte sectors. */
  size: Size;
}

/** The three kinds of disk {@link Machine.addDisk} attaches. */
export type DiskOptions = FileDiskOptions | MemoryDiskOptions | BackendDiskOptions;

/** An attached disk: where its virtio-blk device sits, and what the guest sees. */
export interface Disk extends VirtioDeviceInfo {
  /** Its size in bytes. */
  readonly size: number;
  /** Whether the guest sees it read-only. */
  readonly readOnly: boolean;
}

/** The largest disk served from JS: sector numbers must stay exact as JS numbers. */
const MAX_SERVED_SIZE = 2 ** 52;

/** A backend over `data`; discarded sectors read as zeroes. */
function memoryBackend(data: Uint8Array): BlockBackend {
  const at = (sector: bigint) => Number(sector) * SECTOR_SIZE;
  const zero = async (sector: bigint, count: number) => {
    data.fill(0, at(sector), at(sector) + count * SECTOR_SIZE);
  };
  return {
    discard: zero,
    writeZeroes: zero,
    async read(sector, buffers) {
      let offset = at(sector);
      for (const b of buffers) {
        b.set(data.subarray(offset, offset + b.length));
        offset += b.length;
      }
    },
    async write(sector, buffers) {
      let offset = at(sector);
      for (const b of buffers) {
        data.set(b, offset);
        offset += b.length;
      }
    },
  };
}

/** Runs one request on `backend`; resolves to whether it succeeded. */
async function serveOne(memory: GuestMemory, backend: BlockBackend, request: NativeBlockRequest): Promise<boolean> {
  try {
    const views: Uint8Array[] = [];
    for (let i = 0; i + 1 < request.buffers.length; i += 2) {
      views.push(memory.view(request.buffers[i] as number, request.buffers[i + 1] as number));
    }
    const sector = BigInt(request.sector);
    switch (request.kind) {
      case 'read':
        await backend.read(sector, views);
        break;
      case 'write':
        await backend.write(sector, views);
        break;
      case 'flush':
        await backend.flush?.();
        break;
      // Offered only when the backend has them.
      case 'discard':
        await backend.discard?.(sector, request.sectors);
        break;
      case 'write-zeroes':
        await backend.writeZeroes?.(sector, request.sectors, { unmap: request.unmap });
        break;
    }
    return true;
  } catch {
    return false;
  }
}

/** Checks the options' common part. */
function common(options: Record<string, unknown>): { readOnly: boolean; serial: string | undefined } {
  const readOnly = options.readOnly === undefined ? false : boolean(options.readOnly, 'disk.readOnly');
  if (options.serial !== undefined) {
    const serial = text(options.serial, 'disk.serial');
    if (Buffer.byteLength(serial) > 20) {
      throw new ArgumentError('disk.serial', `${JSON.stringify(serial)} is longer than the 20 bytes a serial holds`);
    }
  }
  return { readOnly, serial: options.serial as string | undefined };
}

/** Attaches a disk served by `backend` from JS. */
function addServed(
  native: NativeMachine,
  memory: GuestMemory,
  backend: BlockBackend,
  size: number,
  readOnly: boolean,
  serial: string | undefined,
): NativeDisk {
  if (size === 0 || size % SECTOR_SIZE !== 0 || size > MAX_SERVED_SIZE) {
    throw new ArgumentError(
      'disk.size',
      `${size} bytes is not a positive multiple of 512 up to 2^52 (a disk is whole 512-byte sectors)`,
    );
  }
  let disk: NativeDisk | undefined;
  const onRequests = (requests: NativeBlockRequest[]): void => {
    for (const request of requests) {
      void serveOne(memory, backend, request).then((ok) => disk?.complete(request.id, ok));
    }
  };
  const served = {
    size,
    readOnly,
    discard: backend.discard !== undefined,
    writeZeroes: backend.writeZeroes !== undefined,
    ...(serial === undefined ? {} : { serial }),
  };
  disk = callNative(() => native.addDiskServed(served, onRequests));
  return disk;
}

/**
 * Attaches a virtio-blk disk to `native` (see {@link Machine.addDisk}).
 * @internal
 */
export function addDisk(native: NativeMachine, memory: GuestMemory, options: DiskOptions): Disk {
  const o = object(options, 'disk');
  const { readOnly, serial } = common(o);
  const kinds = ['path', 'data', 'backend'].filter((k) => o[k] !== undefined);
  if (kinds.length !== 1) {
    throw new ArgumentError(
      'disk',
      `give exactly one of path (an image file), data (a Uint8Array) or backend (a BlockBackend), got ${
        kinds.length === 0 ? 'none' : kinds.join(' and ')
      }`,
    );
  }
  let disk: NativeDisk;
  if (o.path !== undefined) {
    const path = text(o.path, 'disk.path');
    const overlay = o.overlay ?? false;
    if (typeof overlay !== 'boolean' && (typeof overlay !== 'string' || overlay === '')) {
      throw new ArgumentError(
        'disk.overlay',
        `expected true, false or an overlay file's path, got ${describe(overlay)}`,
      );
    }
    if (overlay !== false && readOnly) {
      throw new ArgumentError('disk.overlay', 'an overlay takes writes: drop readOnly, or the overlay');
    }
    disk = callNative(() =>
      native.addDiskFile({
        path,
        readOnly,
        overlay: overlay !== false,
        ...(typeof overlay === 'string' ? { overlayPath: overlay } : {}),
        ...(serial === undefined ? {} : { serial }),
      }),
    );
  } else if (o.data !== undefined) {
    const data = bytes(o.data, 'disk.data');
    disk = addServed(native, memory, memoryBackend(data), data.byteLength, readOnly, serial);
  } else {
    const backend = object(o.backend, 'disk.backend') as unknown as BlockBackend;
    for (const method of ['read', 'write'] as const) {
      if (typeof backend[method] !== 'function') {
        throw new ArgumentError(`disk.backend.${method}`, `expected a function, got ${describe(backend[method])}`);
      }
    }
    for (const method of ['flush', 'discard', 'writeZeroes'] as const) {
      if (backend[method] !== undefined && typeof backend[method] !== 'function') {
        throw new ArgumentError(`disk.backend.${method}`, `expected a function, got ${describe(backend[method])}`);
      }
    }
    let size: number;
    try {
      size = parseSize(o.size, 'disk.size');
    } catch (error) {
      throw error instanceof ConfigError ? new ArgumentError('disk.size', error.reason) : error;
    }
    disk = addServed(native, memory, backend, size, readOnly, serial);
  }
  return { ...disk.info, size: disk.size, readOnly };
}
