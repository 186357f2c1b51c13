/**
 * `kvmkit bench footprint`: what the host runs for one exit, counted by single-stepping the
 * vCPU's thread. Counts, not times: they must say which code ran, and that each path runs
 * more than the one below it.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import type { FootprintReport } from '../src/bench/footprint.js';
import { describeKvm } from './kvm.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

describeKvm('kvmkit bench footprint', () => {
  it("counts each path's instructions and code pages per exit, by the file they ran from", () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvmkit-footprint-'));
    try {
      const json = join(dir, 'footprint.json');
      const result = spawnSync(
        'node',
        [cli, 'bench', 'footprint', '--exits', 'pio-out', '--windows', '3', '--json', json],
        {
          encoding: 'utf8',
          timeout: 120_000,
        },
      );
      expect(result.stderr).not.toContain('not stepped');
      expect(result.status).toBe(0);
      expect(result.stdout).toMatch(/^exit {8}path {6}instructions {2}code pages {2}by object\npio-out {5}c /);
      const report = JSON.parse(readFileSync(json, 'utf8')) as FootprintReport;
      expect(report.unavailable).toEqual([]);
      const [c, builtin, inline] = report.footprints;
      expect(report.footprints.map((f) => `${f.path} ${f.exit} ${f.windows}`)).toEqual([
        'c pio-out 3',
        'builtin pio-out 3',
        'inline pio-out 3',
      ]);
      for (const f of report.footprints) {
        expect(f.codePages).toBe(Object.values(f.pagesByObject).reduce((a, b) => a + b, 0));
        // Every path reads the clock (the vDSO) and makes the ioctl (libc).
        expect(f.pagesByObject['[vdso]']).toBe(1);
        expect(f.pagesByObject['libc.so.6']).toBeGreaterThan(0);
      }
      expect(c?.pagesByObject.kvm_loop).toBeGreaterThan(0);
      expect(builtin?.pagesByObject['kvmkit.linux-x64-gnu.node']).toBeGreaterThan(0);
      // The inline path also runs Node's and V8's code, and JavaScript compiled to anonymous pages.
      expect(inline?.pagesByObject.node).toBeGreaterThan(0);
      expect(inline?.pagesByObject['[anon]']).toBeGreaterThan(0);
      expect(c?.instructions).toBeGreaterThan(50);
      expect(builtin?.instructions).toBeGreaterThan(c?.instructions ?? 0);
      expect(inline?.instructions).toBeGreaterThan(builtin?.instructions ?? 0);
      expect(inline?.codePages).toBeGreaterThan(builtin?.codePages ?? 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
