/**
 * The consumer test: pack kvmkit and its platform package, install both tarballs into an
 * empty directory with no Rust toolchain on PATH, and run a VM there — as `npm install kvmkit`
 * users will.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { describeKvm } from './kvm.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const work = mkdtempSync(join(tmpdir(), 'kvmkit-pack-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** PATH with nothing that provides cargo or rustc. */
const pathWithoutRust = (process.env.PATH ?? '')
  .split(':')
  .filter((dir) => !existsSync(join(dir, 'cargo')) && !existsSync(join(dir, 'rustc')))
  .join(':');

function npm(args: string[], cwd: string): string {
  return execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, PATH: pathWithoutRust },
  });
}

/** Packs `dir`; returns the tarball and the paths it holds. */
function pack(dir: string): { tarball: string; files: string[] } {
  const out = JSON.parse(npm(['pack', '--json', '--pack-destination', work], dir)) as {
    filename: string;
    files: { path: string }[];
  }[];
  const [info] = out;
  if (info === undefined) {
    throw new Error(`npm pack produced nothing in ${dir}`);
  }
  return { tarball: join(work, info.filename), files: info.files.map((f) => f.path) };
}

/** A consumer's strictest settings: the shipped typings must type-check under them. */
const CONSUMER_TSCONFIG = {
  compilerOptions: {
    strict: true,
    skipLibCheck: false,
    noUncheckedIndexedAccess: true,
    exactOptionalPropertyTypes: true,
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    target: 'ES2023',
    lib: ['ES2023', 'ESNext.Disposable'],
    types: ['node'],
    typeRoots: [join(root, 'node_modules', '@types')],
    noEmit: true,
  },
  files: ['use.ts'],
};

describeKvm('the published packages', () => {
  it('install from tarballs and run a VM without Rust', { timeout: 180_000 }, () => {
    const binary = join(root, 'native', 'kvmkit.linux-x64-gnu.node');
    expect(existsSync(binary), 'run `npm run build` first').toBe(true);
    // The platform package as `napi artifacts` lays it out: its package.json plus the addon.
    const platformDir = join(work, 'platform');
    cpSync(join(root, 'npm', 'linux-x64-gnu'), platformDir, { recursive: true });
    copyFileSync(binary, join(platformDir, 'kvmkit.linux-x64-gnu.node'));
    const platformTarball = pack(platformDir).tarball;
    const { tarball: mainTarball, files } = pack(root);
    expect(files).toContain('LICENSE');
    // The benchmark's C programs, which kvmkit bench compiles where it runs.
    expect(files).toEqual(expect.arrayContaining(['benches/kvm_loop.c', 'benches/footprint.c']));
    // No source maps: they would point at src/, which is not shipped.
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);

    const consumer = join(work, 'consumer');
    execFileSync('mkdir', ['-p', consumer]);
    writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
    npm(['install', '--offline', mainTarball, platformTarball], consumer);
    expect(existsSync(join(consumer, 'node_modules', 'kvmkit', 'native', 'kvmkit.linux-x64-gnu.node'))).toBe(false);

    writeFileSync(
      join(consumer, 'run.mjs'),
      `import * as root from 'kvmkit';
import { Machine } from 'kvmkit';
import { PATHS } from 'kvmkit/bench';
const vm = Machine.create({ memory: '1M' });
// mov al,'k' ; out 0xe9,al ; hlt
vm.memory.write(0x1000, Uint8Array.of(0xb0, 0x6b, 0xe6, 0xe9, 0xf4));
vm.vcpu(0).setup({ mode: 'real', entry: 0x1000 });
const console = vm.addDebugConsole();
const outcome = await vm.run();
await vm.close();
const bench = { paths: PATHS.length > 0, inRoot: 'runBench' in root };
process.stdout.write(JSON.stringify({ outcome, output: Buffer.from(console.take()).toString(), bench }));
`,
    );
    const env = { ...process.env, PATH: pathWithoutRust };
    const result = JSON.parse(execFileSync('node', ['run.mjs'], { cwd: consumer, encoding: 'utf8', env })) as unknown;
    expect(result).toEqual({ outcome: { reason: 'halted' }, output: 'k', bench: { paths: true, inRoot: false } });
    const demo = execFileSync(join(consumer, 'node_modules', '.bin', 'kvmkit'), ['demo'], {
      cwd: consumer,
      encoding: 'utf8',
      env,
    });
    expect(demo).toMatch(/guest> Hello from a kvmkit guest!/);
    expect(demo).toMatch(/the guest halted/);

    // CommonJS consumers: require(esm), which Node has without a flag from 20.19 (engines).
    writeFileSync(join(consumer, 'use.cjs'), "process.stdout.write(typeof require('kvmkit').Machine.create);");
    expect(execFileSync('node', ['use.cjs'], { cwd: consumer, encoding: 'utf8', env })).toBe('function');

    // TypeScript consumers: the shipped typings, native ones included, check cleanly.
    writeFileSync(join(consumer, 'tsconfig.json'), JSON.stringify(CONSUMER_TSCONFIG));
    writeFileSync(
      join(consumer, 'use.ts'),
      `import { type KvmkitError, Machine, type Outcome } from 'kvmkit';
const vm: Machine = Machine.create({ memory: '1M', vcpus: 1 });
const reason: Outcome['reason'] = 'halted';
const code: KvmkitError['code'] = 'INVALID_ARGUMENT';
export { code, reason, vm };
`,
    );
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    expect(execFileSync('node', [tsc, '-p', consumer], { cwd: consumer, encoding: 'utf8', env })).toBe('');
  });
});
