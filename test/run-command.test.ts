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
  it('puts the console on stdout, after a banner, and exits 0 when the guest powers off', () => {
    const result = kvmkit('run', '--kernel', kernel, '--append', 'from the cli', '--memory', '32M', '--cpus', '2');
    // The command line as the guest saw it: console=ttyS0 kept, with this host's
    // workarounds, if any, and the number of e820 entries.
    expect(result.stdout).toMatch(/^from the cli console=ttyS0( \S+)* 3$/);
    expect(result.stderr).toContain(
      'kvmkit: booting linux64.elf (linux64) with 32 MiB of RAM and 2 vCPUs; Ctrl-A x quits',
    );
    expect(result.stderr).toContain('kvmkit: shutdown');
    expect(result.status).toBe(0);
  });

  it('takes the kernel as its first argument, a bare --memory in MiB, and a console the user sets', () => {
    const result = kvmkit('run', kernel, '--memory', '32', '--append', 'console=hvc0 quiet');
    expect(result.stderr).toContain('with 32 MiB of RAM and 1 vCPU;');
    expect(result.stdout).toMatch(/^console=hvc0 quiet( \S+)* 3$/);
    expect(result.status).toBe(0);
  });

  it('exits 1 naming the file and what is wrong with it, in words', () => {
    const junk = tempFile('junk-kernel', 'not a kernel');
    const text = kvmkit('run', '--kernel', junk);
    expect(text.stderr).toContain(`kvmkit run: kernel ${junk}: neither an ELF vmlinux nor a bzImage: it is text`);
    expect(text.status).toBe(1);
    const missing = kvmkit('run', '/nonexistent/vmlinuz');
    expect(missing.stderr).toContain('kernel /nonexistent/vmlinuz: no such file: check the path');
    const small = kvmkit('run', kernel, '--memory', '8');
    expect(small.stderr).toMatch(/does not fit in guest RAM: .* the machine has 8 MiB/);
    expect(small.status).toBe(1);
  });

  it('refuses more vCPUs than Linux can be told about before creating any, with the host limit', () => {
    const result = kvmkit('run', kernel, '--cpus', '1000');
    expect(result.stderr).toMatch(/--cpus: 1000 is more than Linux can be told about \(at most 255.*allows \d+\)/);
    expect(result.status).toBe(1);
  });
});

it('asks for the kernel when none is given', () => {
  const result = kvmkit('run');
  expect(result.stderr).toContain('kvmkit run: which kernel?');
  expect(result.status).toBe(2);
});
