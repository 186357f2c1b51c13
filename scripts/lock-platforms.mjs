#!/usr/bin/env node
// Completes package-lock.json with the platform-specific optional packages that npm leaves
// out when the registry it installed from serves only this platform's builds (npm/cli#4828):
// without those entries `npm ci` refuses the lockfile. Each added entry is optional and
// carries the os/cpu/libc its name encodes, so npm skips it on every other platform.
// Run after `npm install` whenever the lockfile changes.
import { readFileSync, writeFileSync } from 'node:fs';

const LOCK = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(LOCK, 'utf8'));

const OS = ['android', 'darwin', 'freebsd', 'linux', 'win32', 'openharmony', 'netbsd', 'openbsd', 'sunos', 'aix'];
const CPU = {
  x64: 'x64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: 'ia32',
  riscv64: 'riscv64',
  s390x: 's390x',
  ppc64: 'ppc64',
  loong64: 'loong64',
};

/** The os/cpu/libc constraints a platform package's name encodes, or undefined. */
function platformOf(name) {
  const parts = name.split('/').pop().split('-');
  const os = parts.find((p) => OS.includes(p));
  if (os === undefined) {
    return name.includes('wasm32') ? { cpu: ['wasm32'] } : undefined;
  }
  const cpu =
    parts.map((p) => (p === 'eabi' ? undefined : CPU[p])).find(Boolean) ??
    (parts.includes('universal') ? undefined : 'x64');
  const entry = { os: [os] };
  if (cpu !== undefined) entry.cpu = [cpu];
  if (parts.includes('musl')) entry.libc = ['musl'];
  if (parts.includes('gnu') || parts.includes('gnueabihf')) entry.libc = ['glibc'];
  return entry;
}

let added = 0;
for (const [path, pkg] of Object.entries(lock.packages)) {
  for (const [name, version] of Object.entries(pkg.optionalDependencies ?? {})) {
    const key = `node_modules/${name}`;
    const nested = `${path}/node_modules/${name}`;
    if (lock.packages[key] !== undefined || lock.packages[nested] !== undefined) {
      continue;
    }
    const platform = platformOf(name);
    if (platform === undefined) {
      continue;
    }
    lock.packages[key] = { version, ...(pkg.dev ? { dev: true } : {}), optional: true, ...platform };
    added++;
  }
}
lock.packages = Object.fromEntries(
  Object.entries(lock.packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a.localeCompare(b))),
);
writeFileSync(LOCK, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`lock-platforms: added ${added} platform entries`);
