/**
 * The guests shipped with kvmkit, built from `guests/` at build time.
 * @module
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Names of the bundled guests. */
export type GuestName =
  | 'bench'
  | 'demo'
  | 'exception'
  | 'finish'
  | 'flood'
  | 'int3'
  | 'io'
  | 'irq'
  | 'mmio'
  | 'msi'
  | 'serial'
  | 'smp'
  | 'spin'
  | 'unhandled'
  | 'virtio-blk'
  | 'virtio-console'
  | 'virtio-net'
  | 'virtio-rng'
  | 'virtio-vsock';

/** Where each bundled guest is loaded, and the mode it starts in. */
export const GUEST_LAYOUT = {
  real: { address: 0x1000 },
  long: { address: 0x10_0000 },
} as const;

/** The path of a bundled guest binary. */
export function guestPath(name: GuestName): string {
  return fileURLToPath(new URL(`../guests/build/${name}.bin`, import.meta.url));
}

/** The bytes of a bundled guest (run `npm run build:guests` in a checkout first). */
export function guestImage(name: GuestName): Uint8Array {
  return readFileSync(guestPath(name));
}
