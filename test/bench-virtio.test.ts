import { describe, expect, it } from 'vitest';
import { formatVirtioTable, parseVirtioResults, type VirtioReport } from '../src/bench/index.js';

describe('kvmkit bench virtio', () => {
  it("reads each test's time from the guest's console and from the host's vsock program", () => {
    const console = [
      '[    1.234] virtio_blk virtio0: [vda] 262144 512-byte logical blocks',
      'kvmkit-bench seq-read real\t0m 1.25s',
      'kvmkit-bench seq-write real\t1m 2.50s',
      'kvmkit-bench bogus real\t0m 9.00s',
      'kvmkit-bench vsock-ready 5201',
      'kvmkit-bench done',
    ].join('\r\n');
    const host = ['kvmkit-bench vsock-g2h seconds 0.500000', 'kvmkit-bench vsock-rtt seconds 0.020000', ''].join('\n');
    expect(parseVirtioResults(`${console}\n${host}`)).toEqual({
      'seq-read': 1.25,
      'seq-write': 62.5,
      'read-4k-qd1': null,
      'vsock-g2h': 0.5,
      'vsock-h2g': null,
      'vsock-rtt': 0.02,
    });
  });

  it('prints throughput, latency and the ratios to QEMU for the disk and for vsock', () => {
    const report: VirtioReport = {
      diskMib: 100,
      latencyReads: 1000,
      vsockMib: 50,
      vsockRounds: 2000,
      results: [
        {
          vmm: 'kvmkit',
          runs: [],
          median: {
            'seq-read': 1,
            'seq-write': 2,
            'read-4k-qd1': 0.1,
            'vsock-g2h': 0.5,
            'vsock-h2g': 1,
            'vsock-rtt': 0.1,
          },
        },
        {
          vmm: 'qemu',
          runs: [],
          median: {
            'seq-read': 2,
            'seq-write': 2,
            'read-4k-qd1': 0.05,
            'vsock-g2h': 1,
            'vsock-h2g': 1,
            'vsock-rtt': 0.05,
          },
        },
      ],
    };
    const table = formatVirtioTable(report);
    expect(table).toContain('104.9 MB/s');
    expect(table).toContain('100.0 µs');
    expect(table).toContain('seq-read 2.00×, seq-write 1.00×, read-4k-qd1 0.50×');
    expect(table).toContain('virtio-vsock, 50 MiB each way, 2000 round trips of 64 bytes');
    expect(table).toContain('52.4 MB/s'); // vsock-h2g: 50 MiB in 1 s
    expect(table).toContain('50.0 µs'); // vsock-rtt: 0.1 s / 2000
    expect(table).toContain('vsock-g2h 2.00×, vsock-h2g 1.00×, vsock-rtt 0.50×');
    expect(table).toMatch(/What limits them/);
  });

  it('says why a VMM has no vsock figures', () => {
    const table = formatVirtioTable({
      diskMib: 16,
      latencyReads: 16,
      vsockMib: 8,
      vsockRounds: 10,
      results: [
        { vmm: 'kvmkit', runs: [], median: { 'seq-read': 1, 'vsock-g2h': 1 } },
        { vmm: 'qemu', runs: [], median: { 'seq-read': 1 }, vsockUnavailable: 'no /dev/vhost-vsock here' },
      ],
    });
    expect(table).toMatch(/^qemu .* no \/dev\/vhost-vsock here$/m);
    expect(table).toContain('seq-read 1.00×');
    expect(table).not.toContain('vsock-g2h 1.00×');
  });
});
