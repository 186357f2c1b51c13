/**
 * `kvmkit bench boot` on Debian's kernel: kvmkit and QEMU boot it to its first console
 * line, with the same kernel and command line, and the report says how long each took.
 */
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { benchBoot, formatBootTable } from '../../src/bench/index.js';
import { describeKvm } from '../kvm.js';

const vmlinux = fileURLToPath(new URL('../../fixtures/cache/vmlinux', import.meta.url));

describeKvm('the boot benchmark', () => {
  it('times kvmkit and QEMU to the same console milestone', async () => {
    const steps: string[] = [];
    const report = await benchBoot({
      kernel: vmlinux,
      cmdline: 'console=ttyS0 earlyprintk=serial,ttyS0,115200',
      milestone: /Linux version 6\.\d+/,
      runs: 1,
      timeoutSeconds: 240,
      progress: (_done, _total, label) => steps.push(label),
    });
    const [kvmkit, qemu] = report.results;
    expect(kvmkit).toMatchObject({ vmm: 'kvmkit', seconds: [expect.any(Number)], median: expect.any(Number) });
    if (qemu?.unavailable === undefined) {
      expect(qemu).toMatchObject({ vmm: 'qemu', seconds: [expect.any(Number)], median: expect.any(Number) });
      expect(steps).toEqual(['kvmkit boot 1', 'qemu boot 1']);
      expect(formatBootTable(report)).toMatch(/kvmkit \/ qemu: \d+\.\d\d×/);
    } else {
      expect(process.env.CI, 'CI installs QEMU').toBeUndefined();
      expect(qemu.unavailable).toContain('not installed');
    }
    expect(formatBootTable(report)).toContain(`boot of ${vmlinux} to /Linux version 6\\.\\d+/`);
  });
});
