/**
 * The benchmark's outputs: a table for the terminal, JSON records, and an HTML page with
 * the latency distributions.
 * @module
 */
import type { LatencyBucket } from '../stats.js';
import { EXITS } from './exits.js';
import { describeLoad } from './host.js';
import type { BenchReport, PathName, PathResult } from './run.js';

/** Formats nanoseconds for people. */
export function formatNs(ns: number | undefined): string {
  if (ns === undefined || Number.isNaN(ns)) {
    return '—';
  }
  if (ns >= 1e6) {
    return `${(ns / 1e6).toFixed(2)} ms`;
  }
  if (ns >= 1e3) {
    return `${(ns / 1e3).toFixed(ns >= 1e5 ? 0 : 2)} µs`;
  }
  return `${Math.round(ns)} ns`;
}

const PATH_NOTES: Record<PathName, string> = {
  c: 'minimal C KVM loop (the floor for a userspace exit)',
  builtin: 'kvmkit, Rust built-in device on the vCPU thread',
  inline: 'kvmkit, TypeScript handler called on the vCPU thread (runInline)',
  'c-thread': 'the C loop answering on a second thread (the floor for an answer from another thread)',
  async: "kvmkit, TypeScript handler on Node's event loop (threaded vCPU)",
  posted: 'kvmkit, posted writes (the vCPU does not wait)',
  qemu: 'QEMU with KVM, answered in its userspace',
};

/** The report as a table for the terminal. */
export function formatTable(report: BenchReport): string {
  const lines: string[] = [];
  const h = report.host;
  lines.push(`kvmkit bench, ${report.date}`);
  lines.push(`machine: ${h.cpu} (${h.cores} CPUs), Linux ${h.kernel}, node ${h.node}`);
  lines.push(`KVM: ${h.kvm}`);
  lines.push(`${report.count} exits per run, ${report.reps} interleaved repetitions; medians`);
  const busy = report.busy;
  if (busy !== undefined) {
    lines.push('busy: the same suite with one CPU held by a busy process the benchmark started');
  }
  lines.push('');
  const ratio = (r: PathResult | undefined) => (r?.ratioToC === undefined ? '—' : `${r.ratioToC.toFixed(2)}×`);
  const header = ['exit', 'path', 'ns/exit', '×C', 'p50', 'p99', 'p99.9', 'usr/exit', 'sys/exit'];
  if (busy !== undefined) {
    header.push('busy ns/exit', 'busy ×C', 'busy p50', 'busy p99');
  }
  const rows = report.results.map((r) => {
    const row = [
      r.exit,
      r.path,
      formatNs(r.nsPerExit),
      ratio(r),
      formatNs(r.p50),
      formatNs(r.p99),
      formatNs(r.p999),
      formatNs(r.cpuUserNsPerExit),
      formatNs(r.cpuSysNsPerExit),
    ];
    if (busy !== undefined) {
      const b = busy.results.find((x) => x.path === r.path && x.exit === r.exit);
      row.push(formatNs(b?.nsPerExit), ratio(b), formatNs(b?.p50), formatNs(b?.p99));
    }
    return row;
  });
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((r) => (r[i] ?? '').length)));
  const format = (cells: string[]) =>
    cells.map((c, i) => (i < 2 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  lines.push(format(header));
  let previous = '';
  for (const row of rows) {
    lines.push(format([row[0] === previous ? '' : (row[0] ?? ''), ...row.slice(1)]));
    previous = row[0] ?? '';
  }
  lines.push('');
  lines.push('p50/p99/p99.9: host handling time per exit, from KVM_RUN returning to re-entering it.');
  lines.push('ns/exit: wall time per exit, guest instructions included. ×C: against the C loop, same run.');
  lines.push("usr/sys: the process's CPU time per exit (for kvmkit, every thread of the Node process).");
  for (const path of new Set(report.results.map((r) => r.path))) {
    lines.push(`  ${path.padEnd(8)} ${PATH_NOTES[path]}`);
  }
  for (const u of report.unavailable) {
    lines.push(`  ${u.path.padEnd(8)} not run: ${u.reason}`);
  }
  const b = report.breakdown;
  if (b !== undefined) {
    lines.push('');
    lines.push('where a port-out exit goes (handling: host time outside KVM_RUN, p50):');
    lines.push(`  the whole exit in the C loop (wall)       ${formatNs(b.cExitNs)}`);
    lines.push(`  an exit KVM answers itself (cpuid, wall)  ${formatNs(b.kernelFloorNs)}`);
    lines.push(`  C's handling                              ${formatNs(b.cHandlingNs)}`);
    lines.push(`  kvmkit's Rust built-in handling           ${formatNs(b.builtinHandlingNs)}`);
    lines.push(`  an inline TypeScript handler, napi call   ${formatNs(b.inlineHandlingNs)}`);
    lines.push(`  C answering on a second thread, hand-off  ${formatNs(b.cThreadHandlingNs)}`);
    lines.push(
      `  an async TypeScript handler, hand-off     ${formatNs(b.asyncHandlingNs)} (p99 ${formatNs(b.asyncHandlingP99Ns)})`,
    );
    const bb = busy?.breakdown;
    if (bb !== undefined) {
      lines.push(
        `  the same, one CPU busy                    ${formatNs(bb.asyncHandlingNs)} (p99 ${formatNs(bb.asyncHandlingP99Ns)})`,
      );
    }
  }
  if (report.createToFirstExitMs !== undefined) {
    const s = report.createToFirstExitMs;
    lines.push('');
    lines.push(`create to first exit: median ${s.median.toFixed(2)} ms, max ${s.max.toFixed(2)} ms (${s.runs} runs)`);
  }
  for (const m of report.idleMemory) {
    lines.push(`idle VMs: ${m.vms} → ${(m.bytesPerVm / 2 ** 20).toFixed(2)} MiB of host memory each`);
  }
  if (report.targets.length > 0) {
    lines.push('');
    lines.push(`targets (${h.kvmKind} KVM):`);
    for (const t of report.targets) {
      lines.push(`  ${t.met ? 'met ' : 'MISS'}  ${t.target}: ${t.measured}`);
    }
    lines.push(`  ${describeLoad(h.load, h.cores)}`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * The report as JSON: one record per (path, exit kind) with `path`, `exit`, `nsPerExit`,
 * `p50`, `p99`, `p999`, `cpuUserNsPerExit`, `cpuSysNsPerExit` and `ratioToC` (null where a
 * path does not report it), plus the run's context.
 */
export function toJson(report: BenchReport): string {
  const results = report.results.map((r) => ({
    path: r.path,
    exit: r.exit,
    runs: r.runs,
    nsPerExit: r.nsPerExit,
    p50: r.p50 ?? null,
    p99: r.p99 ?? null,
    p999: r.p999 ?? null,
    cpuUserNsPerExit: r.cpuUserNsPerExit ?? null,
    cpuSysNsPerExit: r.cpuSysNsPerExit ?? null,
    ratioToC: r.ratioToC ?? null,
    buckets: r.buckets,
  }));
  return `${JSON.stringify({ ...report, results }, null, 2)}\n`;
}

const COLORS: Record<PathName, string> = {
  c: '#444444',
  builtin: '#1f77b4',
  inline: '#2ca02c',
  'c-thread': '#8c564b',
  async: '#d62728',
  posted: '#9467bd',
  qemu: '#ff7f0e',
};

function escapeHtml(text: string): string {
  return text.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] ?? c);
}

/** One SVG chart: each path's handling-time distribution on a log-scaled time axis. */
function chart(results: readonly PathResult[]): string {
  const shown = results.filter((r) => r.buckets.length > 0);
  if (shown.length === 0) {
    return '<p>No exits reached userspace: nothing to plot.</p>';
  }
  const width = 760;
  const height = 260;
  const pad = { left: 50, right: 20, top: 10, bottom: 40 };
  const all = shown.flatMap((r) => r.buckets);
  const lo = Math.log10(Math.max(1, Math.min(...all.map((b) => b.lowNs))));
  const hi = Math.log10(Math.max(...all.map((b) => b.highNs)));
  const x = (ns: number) =>
    pad.left + ((Math.log10(Math.max(ns, 1)) - lo) / (hi - lo || 1)) * (width - pad.left - pad.right);
  const fraction = (r: PathResult, b: LatencyBucket) => b.count / r.buckets.reduce((a, c) => a + c.count, 0);
  const top = Math.max(...shown.flatMap((r) => r.buckets.map((b) => fraction(r, b))));
  const y = (f: number) => height - pad.bottom - (f / top) * (height - pad.top - pad.bottom);
  const lines = shown.map((r) => {
    const points = r.buckets.map(
      (b) => `${x(Math.sqrt(b.lowNs * b.highNs)).toFixed(1)},${y(fraction(r, b)).toFixed(1)}`,
    );
    return `<polyline fill="none" stroke="${COLORS[r.path]}" stroke-width="2" points="${points.join(' ')}"><title>${r.path}</title></polyline>`;
  });
  const ticks: string[] = [];
  for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) {
    ticks.push(
      `<line x1="${x(10 ** e)}" x2="${x(10 ** e)}" y1="${pad.top}" y2="${height - pad.bottom}" stroke="#ddd"/>` +
        `<text x="${x(10 ** e)}" y="${height - pad.bottom + 16}" text-anchor="middle">${formatNs(10 ** e)}</text>`,
    );
  }
  const legend = shown.map(
    (r, i) =>
      `<text x="${pad.left + 10 + i * 110}" y="${height - 6}" fill="${COLORS[r.path]}">■ ${escapeHtml(r.path)}</text>`,
  );
  return `<svg viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" font-family="sans-serif" font-size="12">
${ticks.join('\n')}
<line x1="${pad.left}" x2="${width - pad.right}" y1="${height - pad.bottom}" y2="${height - pad.bottom}" stroke="#000"/>
${lines.join('\n')}
${legend.join('\n')}
</svg>`;
}

/** The report as a self-contained HTML page. */
export function toHtml(report: BenchReport): string {
  const sections = EXITS.filter((exit) => report.results.some((r) => r.exit === exit)).map((exit) => {
    const results = report.results.filter((r) => r.exit === exit);
    const rows = results.map(
      (r) =>
        `<tr><td>${escapeHtml(r.path)}</td><td>${formatNs(r.nsPerExit)}</td><td>${r.ratioToC === undefined ? '—' : `${r.ratioToC.toFixed(2)}×`}</td><td>${formatNs(r.p50)}</td><td>${formatNs(r.p99)}</td><td>${formatNs(r.p999)}</td><td>${formatNs(r.cpuUserNsPerExit)}</td><td>${formatNs(r.cpuSysNsPerExit)}</td></tr>`,
    );
    return `<section><h2>${escapeHtml(exit)}</h2>
<table><tr><th>path</th><th>ns/exit</th><th>×C</th><th>p50</th><th>p99</th><th>p99.9</th><th>usr/exit</th><th>sys/exit</th></tr>
${rows.join('\n')}</table>
<p>Distribution of host handling time per exit (share of exits per histogram bucket):</p>
${chart(results)}</section>`;
  });
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kvmkit bench ${escapeHtml(report.date)}</title>
<style>body{font-family:sans-serif;max-width:820px;margin:2em auto;color:#222}table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right}td:first-child,th:first-child{text-align:left}pre{background:#f6f6f6;padding:1em;overflow:auto}</style>
</head><body>
<h1>kvmkit exit-latency benchmark</h1>
<pre>${escapeHtml(formatTable(report))}</pre>
${sections.join('\n')}
</body></html>
`;
}
