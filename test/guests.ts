/** Builds machines around the bundled test guests. */
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import { GUEST_LAYOUT, type GuestName, guestImage } from '../src/guests.js';
import { type Device, Machine, type MachineConfig } from '../src/index.js';

const MODES: Record<Exclude<GuestName, 'bench'>, 'real' | 'long'> = {
  demo: 'long',
  exception: 'long',
  finish: 'long',
  flood: 'real',
  int3: 'long',
  io: 'real',
  irq: 'real',
  mmio: 'long',
  msi: 'long',
  serial: 'real',
  smp: 'long',
  spin: 'real',
  unhandled: 'real',
  'virtio-blk': 'long',
  'virtio-console': 'long',
  'virtio-net': 'long',
  'virtio-rng': 'long',
  'virtio-vsock': 'long',
};

/** A machine with `guest` loaded and every vCPU set up to run it. */
export function machineWith(guest: Exclude<GuestName, 'bench'>, config: Partial<MachineConfig> = {}): Machine {
  const vm = Machine.create({ memory: '2M', ...config });
  const mode = MODES[guest];
  const { address } = GUEST_LAYOUT[mode];
  vm.memory.write(address, guestImage(guest));
  for (const vcpu of vm.vcpus) {
    vcpu.setup({ mode, entry: address, stack: 0x8_0000 });
  }
  return vm;
}

/** `length` letters a–z in turn: input whose order shows in what a guest echoes. */
export function letters(length: number): string {
  return Array.from({ length }, (_, i) => String.fromCharCode(0x61 + (i % 26))).join('');
}

/** What the io guest reads from its registers at ports 0x60, 0x62 and 0x64. */
const IO_GUEST_READS = new Map([
  [0x60, 0x7f],
  [0x62, 0x1234],
  [0x64, 0xfffffffe],
]);

/** What the io guest writes back, as [port, value]: each read plus one. */
export const IO_GUEST_WRITES: [number, number][] = [
  [0x60, 0x80],
  [0x62, 0x1235],
  [0x64, 0xffffffff],
];

/** A device for the io guest's registers (ports 0x60–0x67) that records the writes as [port, value]. */
export function ioRegisters(written: [number, number | bigint][] = [], options: { posted?: boolean } = {}): Device {
  return {
    name: 'regs',
    ...options,
    read: (a) => IO_GUEST_READS.get(a.address) ?? 0,
    write: (a, v) => void written.push([a.address, v]),
  };
}

/**
 * Registers an `afterEach` that closes the machines a test made; returns the function that
 * marks one for closing (and returns it).
 */
export function closedAfterEach(): (vm: Machine) => Machine {
  const open: Machine[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((vm) => vm.close()));
  });
  return (vm) => {
    open.push(vm);
    return vm;
  };
}

/** Writes `bytes` to a file named after `name` in the temporary directory; returns its path. */
export function tempFile(name: string, bytes: Uint8Array | string): string {
  const path = join(tmpdir(), `kvmkit-${process.pid}-${name}`);
  writeFileSync(path, bytes);
  return path;
}
