/**
 * `kvmkit run` as a user runs it: the stand-in kernel in guests/linux64.S prints its command
 * line on COM1, which `run` puts on stdout, and powers off through ACPI, which exits 0 —
 * with 2 vCPUs, the second still waiting for its startup IPI.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { tempFile } from './guests.js';
import { describeKvm } from './kvm.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const kernel = fileURLToPath(new URL('../guests/build/linux64.elf', import.meta.url));

function kvmkit(...args: string[]) {
  return spawnSync('node', [cli, ...args], { encoding: 'latin1', input: '', timeout: 60_000 });
}

describeKvm('kvmkit run', () => {
  it('puts the console on stdout and exits 0 when the guest powers off', () => {
    const result = kvmkit('run', '--kernel', kernel, '--append', 'from the cli', '--memory', '32M', '--cpus', '2');
    // The command line as the guest saw it (with this host's workarounds, if any), and the
    // number of e820 entries.
    expect(result.stdout).toMatch(/^from the cli( \S+)* 3$/);
    expect(result.stderr).toContain('kvmkit: shutdown');
    expect(result.status).toBe(0);
  });

  it('exits 1 naming the file and what is wrong with it', () => {
    const junk = tempFile('junk-kernel', 'not a kernel');
    const result = kvmkit('run', '--kernel', junk);
    expect(result.stderr).toContain(`kvmkit: kernel ${junk}: neither an ELF vmlinux nor a bzImage`);
    expect(result.stderr).toContain('[BAD_IMAGE]');
    expect(result.status).toBe(1);
  });
});

it('asks for the kernel when --kernel is missing', () => {
  const result = kvmkit('run');
  expect(result.stderr).toContain('--kernel');
  expect(result.status).toBe(1);
});

it('documents every run and bench boot flag in --help', () => {
  const help = kvmkit('--help').stdout;
  for (const flag of [
    '--kernel',
    '--initrd',
    '--append',
    '--memory',
    '--cpus',
    '--standard-bzimage',
    '--milestone',
    '--runs',
    '--timeout',
    '--no-qemu',
  ]) {
    expect(help).toContain(flag);
  }
});
