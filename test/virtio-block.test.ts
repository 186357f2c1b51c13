import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { diskFlag, parseCommand } from '../src/cli-args.js';
import { type BlockBackend, type DiskOptions, Machine } from '../src/index.js';
import { closedAfterEach, machineWith, tempFile } from './guests.js';
import { describeKvm } from './kvm.js';

const track = closedAfterEach();
const SECTOR = 512;
const SERIAL = 'kvmkit-blk-serial-01';
const SIGNATURE = 'kvmkit-blk-disk0';

/**
 * A disk of `sectors` sectors that starts with the signature the guest prints; sectors 4-8
 * hold 0x44 (the guest discards 5 and zeroes 4, 6 and 7 where it may).
 */
function image(sectors = 128): Uint8Array {
  const bytes = new Uint8Array(sectors * SECTOR);
  bytes.set(Buffer.from(SIGNATURE));
  bytes.fill(0x11, SECTOR, 2 * SECTOR);
  bytes.fill(0x44, 4 * SECTOR, 9 * SECTOR);
  return bytes;
}

const made: string[] = [];
function file(name: string, bytes: Uint8Array): string {
  const path = tempFile(name, bytes);
  made.push(path);
  return path;
}
afterAll(() => {
  for (const path of made) rmSync(path, { force: true });
});

/** What the guest wrote to sector 1. */
const WRITTEN = new Uint8Array(SECTOR).fill('W'.charCodeAt(0));

/** Runs the virtio-blk guest on a writable disk and a read-only one; returns what it printed. */
async function runGuest(writable: DiskOptions, readOnly: DiskOptions = { data: image(8), readOnly: true }) {
  const vm: Machine = track(machineWith('virtio-blk', { memory: '4M', irqchip: true }));
  const disk = vm.addDisk({ serial: SERIAL, ...writable });
  vm.addDisk(readOnly);
  const console = vm.addDebugConsole();
  vm.addDebugExit(0xf4);
  const outcome = await vm.run();
  return { outcome, printed: console.take(), disk };
}

function expectPassed(result: Awaited<ReturnType<typeof runGuest>>): void {
  expect(result.outcome).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x55 });
  const printed = Buffer.from(result.printed);
  expect(printed.subarray(0, 16).toString()).toBe(SIGNATURE);
  expect(printed.subarray(16, 36).toString()).toBe(SERIAL);
}

const sector = (bytes: Uint8Array, n: number) => bytes.subarray(n * SECTOR, (n + 1) * SECTOR);

/** Checks that the guest's discard and write-zeroes left sectors 4-7 zero, and only them. */
function expectTrimmed(bytes: Uint8Array): void {
  expect(bytes.subarray(4 * SECTOR, 8 * SECTOR).every((b) => b === 0)).toBe(true);
  expect(sector(bytes, 8).every((b) => b === 0x44)).toBe(true);
}

describeKvm('virtio-blk', () => {
  it('serves an image file: reads, writes, serial, flush, and the hostile requests', async () => {
    const path = file('blk-raw.img', image());
    const readOnly = file('blk-ro.img', image(8));
    const result = await runGuest({ path }, { path: readOnly, readOnly: true });
    expectPassed(result);
    expect(result.disk).toMatchObject({ name: 'virtio-blk', base: 0xc000_0000, size: 128 * SECTOR, readOnly: false });
    expect(sector(readFileSync(path), 1)).toEqual(Buffer.from(WRITTEN));
    expectTrimmed(readFileSync(path));
    expect(readFileSync(readOnly)).toEqual(Buffer.from(image(8)));
  });

  it('leaves the base image untouched under an overlay', async () => {
    const base = file('blk-base.img', image());
    const overlay = file('blk-overlay.img', new Uint8Array());
    expectPassed(await runGuest({ path: base, overlay }));
    expect(readFileSync(base)).toEqual(Buffer.from(image()));
    const over = readFileSync(overlay);
    expect(over.length).toBe(128 * SECTOR);
    expect(sector(over, 1)).toEqual(Buffer.from(WRITTEN));
    // A temporary overlay works the same, and the base is shared by both runs.
    expectPassed(await runGuest({ path: base, overlay: true }));
    expect(readFileSync(base)).toEqual(Buffer.from(image()));
  });

  it('serves a disk held in a Uint8Array, whose bytes the guest writes', async () => {
    const data = image();
    expectPassed(await runGuest({ data }));
    expect(sector(data, 1)).toEqual(WRITTEN);
    expect(sector(data, 2)).toEqual(new Uint8Array(SECTOR));
    expectTrimmed(data);
  });

  it('hands requests in batches to a TypeScript backend, with buffers in guest memory', async () => {
    const data = image();
    const calls: string[] = [];
    const backend: BlockBackend = {
      async read(sector, buffers) {
        calls.push(`read ${sector} ${buffers.map((b) => b.length).join('+')}`);
        let at = Number(sector) * SECTOR;
        for (const b of buffers) {
          b.set(data.subarray(at, at + b.length));
          at += b.length;
        }
      },
      async write(sector, buffers) {
        calls.push(`write ${sector} ${buffers.map((b) => b.length).join('+')}`);
        data.set(buffers[0] ?? new Uint8Array(), Number(sector) * SECTOR);
      },
      async flush() {
        calls.push('flush');
      },
    };
    expectPassed(await runGuest({ backend, size: 128 * SECTOR }));
    expect(sector(data, 1)).toEqual(WRITTEN);
    // Hostile requests never reach the backend. The read in flight at the reset reaches it
    // only if the I/O thread took it before the reset.
    expect(calls.slice(0, 5)).toEqual(['read 0 512', 'write 1 512', 'read 1 512', 'flush', 'read 0 512']);
    expect(calls.slice(5)).toEqual(calls.length === 7 ? ['read 0 512', 'read 0 512'] : ['read 0 512']);
    // Without discard or writeZeroes, the guest was not offered them and got UNSUPP.
    expect(sector(data, 4).every((b) => b === 0x44)).toBe(true);
  });

  it('offers discard and write-zeroes when the backend has them, handing it only checked ranges', async () => {
    const data = image();
    const trims: string[] = [];
    const backend: BlockBackend = {
      async read(sector, buffers) {
        let at = Number(sector) * SECTOR;
        for (const b of buffers) {
          b.set(data.subarray(at, at + b.length));
          at += b.length;
        }
      },
      async write(sector, buffers) {
        data.set(buffers[0] ?? new Uint8Array(), Number(sector) * SECTOR);
      },
      async discard(sector, count) {
        trims.push(`discard ${sector} ${count}`);
      },
      async writeZeroes(sector, count, { unmap }) {
        trims.push(`write-zeroes ${sector} ${count}${unmap ? ' unmap' : ''}`);
        data.fill(0, Number(sector) * SECTOR, (Number(sector) + count) * SECTOR);
      },
    };
    expectPassed(await runGuest({ backend, size: 128 * SECTOR }));
    // The segments past the end, over the limits or with bad flags never reached it.
    expect(trims).toEqual(['discard 5 1', 'write-zeroes 4 1', 'write-zeroes 6 2 unmap']);
    expect(sector(data, 4).every((b) => b === 0)).toBe(true);
  });

  it('reports a backend that fails as an I/O error to the guest', async () => {
    const backend: BlockBackend = {
      read: () => Promise.reject(new Error('unreadable')),
      write: async () => {},
    };
    const result = await runGuest({ backend, size: '64K' });
    // Check 4: the first read's status.
    expect(result.outcome).toEqual({ reason: 'device-request', device: 'debug-exit', status: 4 });
  });

  it('refuses bad disks with typed errors', () => {
    const vm = track(machineWith('virtio-blk', { memory: '4M', irqchip: true }));
    expect(() => vm.addDisk({ path: '/nonexistent/disk.img' })).toThrow(
      expect.objectContaining({ code: 'BAD_DISK', message: expect.stringContaining('no such file') }),
    );
    const odd = file('blk-odd.img', new Uint8Array(1000));
    expect(() => vm.addDisk({ path: odd })).toThrow(
      expect.objectContaining({ code: 'BAD_DISK', message: expect.stringContaining('not a multiple of 512') }),
    );
    expect(() => vm.addDisk({ data: new Uint8Array(1000) })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'disk.size' }),
    );
    const backend = { read: async () => {}, write: async () => {} };
    expect(() => vm.addDisk({ backend: { ...backend, discard: 1 } as unknown as BlockBackend, size: '1M' })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'disk.backend.discard' }),
    );
    expect(() => vm.addDisk({ backend, size: '1X' })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'disk.size' }),
    );
    expect(() => vm.addDisk({} as DiskOptions)).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('exactly one of') }),
    );
    expect(() => vm.addDisk({ path: odd, readOnly: true, overlay: true })).toThrow(
      expect.objectContaining({ argument: 'disk.overlay' }),
    );
    expect(() => vm.addDisk({ data: image(), serial: 'x'.repeat(21) })).toThrow(
      expect.objectContaining({ argument: 'disk.serial' }),
    );
  });

  it('closes every image, overlay and eventfd with its machine', async () => {
    const path = file('blk-leak.img', image(8));
    const once = async () => {
      const vm = Machine.create({ memory: '64K', irqchip: true });
      vm.addDisk({ path });
      vm.addDisk({ path, overlay: true });
      vm.addDisk({ data: image(8) });
      await vm.close();
    };
    const fds = () => readdirSync('/proc/self/fd').length;
    await once();
    const before = fds();
    for (let i = 0; i < 100; i++) {
      await once();
    }
    expect(fds() - before).toBeLessThanOrEqual(2);
  });

  it('needs the in-kernel irqchip', () => {
    const vm = track(machineWith('virtio-blk', { memory: '4M' }));
    expect(() => vm.addDisk({ data: image() })).toThrow(expect.objectContaining({ code: 'NO_IRQCHIP' }));
  });
});

describe('kvmkit run --disk', () => {
  it('is repeatable, in order, and parses FILE[,ro][,overlay]', () => {
    const spec = {
      name: 'run',
      summary: '',
      positionals: [],
      options: { disk: { type: 'string', repeatable: true, help: '' } },
    } as const;
    const parsed = parseCommand(spec, ['--disk', 'a.img', '--disk=b.img,ro']);
    expect(parsed.lists.disk?.map(diskFlag)).toEqual([{ path: 'a.img' }, { path: 'b.img', readOnly: true }]);
    expect(diskFlag('a.img')).toEqual({ path: 'a.img' });
    expect(diskFlag('a,b.img,ro')).toEqual({ path: 'a,b.img', readOnly: true });
    expect(diskFlag('a.img,overlay')).toEqual({ path: 'a.img', overlay: true });
    expect(() => diskFlag(',ro')).toThrow(expect.objectContaining({ code: 'INVALID_CONFIG' }));
    expect(() => diskFlag('a.img,ro,overlay')).toThrow(expect.objectContaining({ field: '--disk' }));
  });
});
