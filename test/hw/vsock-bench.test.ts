/**
 * The vsock part of `kvmkit bench virtio`, driven small on hardware virtualization: Debian's
 * kernel with the test initramfs serves test/hw/vsock-bench.c's tests, the same program
 * times them from the host through kvmkit's Unix socket and, where the test machine has
 * /dev/vhost-vsock and QEMU, through QEMU's vhost-vsock. Nothing here is timed: it checks
 * that every figure comes back, and prints the table.
 */
import { accessSync, constants } from 'node:fs';
import { expect, it } from 'vitest';
import { findQemu } from '../../src/bench/anchors.js';
import { benchVirtio, formatVirtioTable, VSOCK_TESTS } from '../../src/bench/index.js';
import { initramfs, vmlinuz } from '../boot/debian.js';
import { describeHw } from './hardware.js';

function vhostVsock(): boolean {
  try {
    accessSync('/dev/vhost-vsock', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

describeHw('kvmkit bench virtio, vsock part', () => {
  it('measures vsock both ways and round trips on kvmkit and on QEMU, from one host program', async () => {
    const withQemu = 'path' in findQemu() && vhostVsock();
    const report = await benchVirtio({
      kernel: vmlinuz,
      initrd: initramfs,
      runs: 1,
      diskMib: 4,
      latencyReads: 16,
      vsockMib: 4,
      vsockRounds: 50,
      timeoutSeconds: 240,
      skipQemu: !withQemu,
    });
    process.stdout.write(formatVirtioTable(report));
    const [kvmkit, qemu] = report.results;
    for (const test of VSOCK_TESTS) {
      expect(kvmkit?.runs[0]?.[test], `kvmkit ${test}`).toBeGreaterThan(0);
      if (withQemu) {
        expect(qemu?.runs[0]?.[test], `qemu ${test}`).toBeGreaterThan(0);
      }
    }
  }, 600_000);
});
