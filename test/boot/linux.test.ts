/**
 * Debian's stock kernel (scripts/fixtures.sh) booted through kvmkit, its console on the
 * Rust 16550. On hardware virtualization it boots to the initramfs's init; on a
 * software-assisted host, which emulates every instruction, it gets through early boot.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { createLinuxMachine, hardwareVirtualization, type Outcome } from '../../src/index.js';
import { describeKvm } from '../kvm.js';

const fixture = (name: string) => fileURLToPath(new URL(`../../fixtures/cache/${name}`, import.meta.url));
const vmlinux = fixture('vmlinux');
const initramfs = fixture('initramfs');

/** Runs until the console matches `until`, the run ends, or `seconds` pass; returns what it printed. */
async function bootUntil(
  options: Parameters<typeof createLinuxMachine>[0],
  until: RegExp,
  seconds: number,
): Promise<{ log: string; outcome: Outcome | undefined; protocol: string }> {
  const { vm, console, protocol } = createLinuxMachine(options);
  let log = '';
  let outcome: Outcome | undefined;
  try {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, seconds * 1000);
      console.output.on('data', (chunk: Buffer) => {
        log += chunk.toString('latin1');
        if (until.test(log)) {
          clearTimeout(timer);
          resolve();
        }
      });
      void vm.run().then((o) => {
        outcome = o;
        clearTimeout(timer);
        resolve();
      });
    });
  } finally {
    await vm.close();
  }
  return { log, outcome, protocol };
}

describeKvm("Debian's kernel", () => {
  it('prints its boot log through the UART with our command line and memory map', async () => {
    expect(existsSync(vmlinux), 'run scripts/fixtures.sh first').toBe(true);
    const { log, protocol } = await bootUntil(
      { kernel: vmlinux, cmdline: 'console=ttyS0 earlyprintk=serial,ttyS0,115200 kvmkit.marker=42' },
      /Memory: .* available/,
      300,
    );
    expect(protocol).toBe('pvh');
    expect(log).toMatch(/Linux version 6\.\d+\.\d+-\d+-amd64/);
    expect(log).toMatch(/Command line: .*kvmkit\.marker=42/);
    expect(log).toContain('BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable');
    expect(log).toContain('BIOS-e820: [mem 0x0000000000100000-0x000000001fffffff] usable');
    expect(log).toMatch(/Memory: \d+K\/5\d{5}K available/);
  });

  it.runIf(hardwareVirtualization())('boots to the initramfs init on hardware virtualization', async () => {
    const { log } = await bootUntil(
      { kernel: vmlinux, initrd: initramfs, cmdline: 'console=ttyS0 kvmkit.marker=7' },
      /KVMKIT-INIT-OK .*\n/,
      120,
    );
    expect(log).toMatch(/KVMKIT-INIT-OK .*kvmkit\.marker=7/);
  });

  it.skipIf(hardwareVirtualization())(
    'boots to init only on hardware virtualization (this host is software-assisted: too slow to reach it)',
    () => {},
  );
});
