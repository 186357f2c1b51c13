/** The benchmark suite is itself tested: small runs that must answer every exit, and well-formed outputs. */
import { expect, it } from 'vitest';
import { findQemu } from '../src/bench/anchors.js';
import { EXITS, formatTable, PATHS, runBench, toHtml, toJson } from '../src/bench/index.js';
import { describeKvm } from './kvm.js';

describeKvm('the benchmark', () => {
  it('runs every path on every exit kind with a small count and reports it', { timeout: 120_000 }, async () => {
    const progress: number[] = [];
    const report = await runBench({ count: 50, reps: 1, idleCounts: [1, 3], progress: (done) => progress.push(done) });
    const ran = new Set(report.results.map((r) => r.path));
    for (const path of PATHS) {
      expect(ran.has(path) || report.unavailable.some((u) => u.path === path)).toBe(true);
    }
    expect(ran).toContain('c');
    // Where QEMU is installed it runs, on Intel and AMD hosts alike.
    if ('path' in findQemu()) {
      expect(report.unavailable).toEqual([]);
      expect(ran).toContain('qemu');
    }
    for (const r of report.results) {
      expect(r.runs).toBe(1);
      // QEMU is timed from outside: at this count its start-up noise can swamp the difference.
      expect(r.nsPerExit).toBeGreaterThanOrEqual(r.path === 'qemu' ? 0 : 1);
      if (r.path !== 'qemu' && r.exit !== 'cpuid') {
        expect(r.p50).toBeGreaterThan(0);
        expect(r.ratioToC).toBeGreaterThan(0);
      }
    }
    // Each exit kind ran on C, the built-in, and every TypeScript path that applies.
    for (const exit of EXITS) {
      expect(report.results.some((r) => r.path === 'builtin' && r.exit === exit)).toBe(true);
    }
    expect(report.results.filter((r) => r.path === 'posted').map((r) => r.exit)).toEqual(['pio-out', 'mmio-write']);
    // The C loop answering on a second thread runs where an exit reaches userspace, and its
    // hand-off stands beside the async path's in the breakdown.
    expect(report.results.filter((r) => r.path === 'c-thread').map((r) => r.exit)).toEqual(
      EXITS.filter((exit) => exit !== 'cpuid'),
    );
    expect(report.breakdown?.cThreadHandlingNs).toBeGreaterThan(0);
    expect(formatTable(report)).toMatch(/C answering on a second thread, hand-off +\d/);
    expect(report.createToFirstExitMs?.runs).toBe(20);
    expect(report.idleMemory.map((m) => m.vms)).toEqual([1, 3]);
    expect(report.targets.length).toBeGreaterThanOrEqual(5);
    expect(progress.at(-1)).toBe(progress.length - 1);

    const json = JSON.parse(toJson(report)) as { results: Record<string, unknown>[] };
    for (const record of json.results) {
      for (const field of ['path', 'exit', 'nsPerExit', 'p50', 'p99', 'ratioToC']) {
        expect(Object.keys(record)).toContain(field);
      }
    }
    const html = toHtml(report);
    expect(html).toMatch(/^<!doctype html>/);
    expect(html.match(/<svg /g)?.length).toBe(EXITS.length - 1); // cpuid never reaches userspace
    expect(html).toContain('</html>');
    expect(formatTable(report)).toMatch(/where a port-out exit goes/);
    // Next to the targets: how busy the host was, which a miss may owe to.
    expect(formatTable(report)).toMatch(
      /targets \((hardware|software-assisted) KVM\):\n(.*\n)* {2}host (busy|idle): load average [\d.]+ on \d+ CPUs; other processes used [\d.]+ CPUs/,
    );
    expect(report.host.load.otherCpus).toBeGreaterThanOrEqual(0);
  });

  it('runs the suite again with one CPU busy, side by side, and stops the busy process', {
    timeout: 120_000,
  }, async () => {
    const report = await runBench({
      count: 50,
      reps: 1,
      paths: ['c', 'async'],
      exits: ['pio-out'],
      lifecycle: false,
      busy: true,
    });
    expect(report.busy?.results.map((r) => [r.path, r.exit, r.runs])).toEqual([
      ['c', 'pio-out', 1],
      ['async', 'pio-out', 1],
    ]);
    expect(report.busy?.results[1]?.ratioToC).toBeGreaterThan(0);
    expect(report.targets.map((t) => t.target)).toContain('async ≤ 3× C on every exit kind, one CPU busy');
    expect(formatTable(report)).toMatch(/busy ×C/);
  });

  it('refuses counts the guest cannot make', async () => {
    await expect(runBench({ count: 0 })).rejects.toThrow(/count: expected a whole number from 1/);
    await expect(runBench({ reps: 1.5 })).rejects.toThrow(/reps/);
  });
});
