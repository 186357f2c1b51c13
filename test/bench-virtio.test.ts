import { describe, expect, it } from 'vitest';
import { formatVirtioTable, parseVirtioResults, type VirtioReport } from '../src/bench/index.js';

describe('kvmkit bench virtio', () => {
  it("reads each test's wall time from the guest's console", () => {
    const console = [
      '[    1.234] virtio_blk virtio0: [vda] 262144 512-byte logical blocks',
      'kvmkit-bench seq-read real\t0m 1.25s',
      'kvmkit-bench seq-write real\t1m 2.50s',
      'kvmkit-bench bogus real\t0m 9.00s',
      'kvmkit-bench done',
    ].join('\r\n');
    expect(parseVirtioResults(console)).toEqual({ 'seq-read': 1.25, 'seq-write': 62.5, 'read-4k-qd1': null });
  });

  it('prints throughput, latency and the ratios to QEMU', () => {
    const report: VirtioReport = {
      diskMib: 100,
      latencyReads: 1000,
      results: [
        { vmm: 'kvmkit', runs: [], median: { 'seq-read': 1, 'seq-write': 2, 'read-4k-qd1': 0.1 } },
        { vmm: 'qemu', runs: [], median: { 'seq-read': 2, 'seq-write': 2, 'read-4k-qd1': 0.05 } },
      ],
    };
    const table = formatVirtioTable(report);
    expect(table).toContain('104.9 MB/s');
    expect(table).toContain('100.0 µs');
    expect(table).toContain('seq-read 2.00×, seq-write 1.00×, read-4k-qd1 0.50×');
  });
});
