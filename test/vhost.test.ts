/**
 * vhost backends (`{ vhost: true }` on addNet and addVsock): where the host has a usable
 * /dev/vhost-net or /dev/vhost-vsock the device opens (and vhost-net carries the net guest's
 * ARP exchange with the host's kernel through a TAP); where it has not, the error is
 * `VHOST_UNAVAILABLE`, naming the node and what to do. The development host has no
 * /dev/vhost-*; the test machine (test/hw) has both, and test/hw/vhost.test.ts boots Debian on
 * them.
 */
import { accessSync, constants } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { closedAfterEach, machineWith } from './guests.js';
import { describeKvm } from './kvm.js';
import { cannotCreateTaps, deleteTap, makeTap } from './tap.js';

const track = closedAfterEach();

/** Whether this process may open `path` read-write (what vhost needs). */
function usable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

const unavailable = (path: string, module: string) =>
  expect.objectContaining({
    code: 'VHOST_UNAVAILABLE',
    message: expect.stringMatching(new RegExp(`${path}.*(${module}|run as root).*drop \`vhost\``)),
  });

describeKvm('vhost-vsock', () => {
  it('opens where /dev/vhost-vsock is usable, and says VHOST_UNAVAILABLE with a remedy where not', () => {
    const vm = track(machineWith('virtio-net', { memory: '4M', irqchip: true }));
    // A CID no other VM on this host has (vhost CIDs are host-wide).
    const cid = 100_000 + (process.pid % 1_000_000);
    if (usable('/dev/vhost-vsock')) {
      const vsock = vm.addVsock({ cid, vhost: true });
      expect(vsock.cid).toBe(cid);
      // The host side is the kernel's AF_VSOCK: kvmkit's own API says so.
      expect(() => vsock.listen(1234, () => {})).toThrow(expect.objectContaining({ code: 'VHOST_IN_KERNEL' }));
    } else {
      expect(() => vm.addVsock({ cid, vhost: true })).toThrow(unavailable('/dev/vhost-vsock', 'vhost_vsock'));
    }
  });

  it('refuses vhost with uds, and a vhost that is not a boolean', () => {
    const vm = track(machineWith('virtio-net', { memory: '4M', irqchip: true }));
    expect(() => vm.addVsock({ cid: 3, uds: '/tmp/x.sock', vhost: true })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('uds or vhost') }),
    );
    expect(() => vm.addVsock({ cid: 3, vhost: 'yes' as unknown as boolean })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
  });
});

const noTap = cannotCreateTaps();

describe('vhost-net options', () => {
  it('needs a TAP', () => {
    const vm = track(machineWith('virtio-net', { memory: '4M', irqchip: true }));
    expect(() => vm.addNet({ frames: () => {}, vhost: true } as never)).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('give tap with vhost') }),
    );
  });
});

describeKvm('vhost-net on a TAP', () => {
  it.skipIf(noTap !== undefined)(
    `carries the guest's frames where /dev/vhost-net is usable, and says VHOST_UNAVAILABLE where not${noTap === undefined ? '' : ` (skipped: ${noTap})`}`,
    async () => {
      const tap = `kvmkitv${process.pid % 100_000}`;
      makeTap(tap, '10.0.0.1/24');
      try {
        const vm = track(machineWith('virtio-net', { memory: '4M', irqchip: true }));
        vm.addDebugExit(0xf4);
        if (!usable('/dev/vhost-net')) {
          expect(() => vm.addNet({ tap, vhost: true })).toThrow(unavailable('/dev/vhost-net', 'vhost_net'));
          return;
        }
        const net = vm.addNet({ tap, mac: '02:00:00:00:00:0a', vhost: true });
        // The guest asks who has 10.0.0.1; the host's kernel answers through vhost-net.
        expect(await vm.run()).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x55 });
        expect(() => net.send(Buffer.alloc(64))).toThrow(expect.objectContaining({ code: 'VHOST_IN_KERNEL' }));
      } finally {
        deleteTap(tap);
      }
    },
  );
});
