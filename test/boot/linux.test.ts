/**
 * Debian's stock kernel (scripts/fixtures.sh) booted through kvmkit, its console on the
 * Rust 16550, as far as a software-assisted host (which emulates every instruction) gets it:
 * through early boot. Full boots to init are in test/hw (`npm run test:hw`).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { createLinuxMachine } from '../../src/index.js';
import { describeKvm } from '../kvm.js';
import { bootUntil, vmlinux, vmlinuz } from './debian.js';

describeKvm("Debian's kernel", () => {
  it('prints its boot log through the UART with our command line, memory map and ACPI tables', async () => {
    expect(existsSync(vmlinux), 'run scripts/fixtures.sh first').toBe(true);
    const { log, loaded } = await bootUntil(
      { kernel: vmlinux, cmdline: 'console=ttyS0 earlyprintk=serial,ttyS0,115200 kvmkit.marker=42' },
      /Memory: .* available/,
      300,
    );
    expect(loaded.protocol).toBe('pvh');
    expect(log).toMatch(/Linux version 6\.\d+\.\d+-\d+-amd64/);
    expect(log).toMatch(/Command line: .*kvmkit\.marker=42/);
    expect(log).toContain('BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable');
    expect(log).toContain('BIOS-e820: [mem 0x0000000000100000-0x000000001fffffff] usable');
    expect(log).toMatch(/ACPI: RSDP 0x00000000000E0000 000024 \(v02 KVMKIT\)/);
    for (const table of ['XSDT', 'FACP', 'APIC', 'DSDT']) {
      expect(log).toMatch(new RegExp(`ACPI: ${table} 0x00000000000E0[0-9A-F]{3} `));
    }
    expect(log).toMatch(/Memory: \d+K\/5\d{5}K available/);
  });

  it('sees 4 GiB of RAM split around the 32-bit hole, in the e820 map and in its total', async () => {
    // Early boot's work grows with RAM: a software-assisted host needs about 4 minutes to get here.
    const { log } = await bootUntil(
      { kernel: vmlinux, memory: '4G', cmdline: 'console=ttyS0 earlyprintk=serial,ttyS0,115200' },
      /Memory: .* available/,
      600,
    );
    expect(log).toContain('BIOS-e820: [mem 0x0000000000100000-0x00000000bfffffff] usable');
    expect(log).toContain('BIOS-e820: [mem 0x0000000100000000-0x000000013fffffff] usable');
    expect(log).not.toMatch(/BIOS-e820: \[mem 0x00000000c[0-9a-f]{7}-/);
    // 4 GiB less the EBDA/BIOS area the map reserves below 1 MiB (Debian's 6.1 shows 4193912K).
    expect(log).toMatch(/Memory: \d+K\/419\d{4}K available/);
  });

  it('boots its bzImage through host-side decompression and brings up both CPUs from the MADT', async () => {
    const kernelCache = mkdtempSync(join(tmpdir(), 'kvmkit-cache-'));
    try {
      const { log, loaded } = await bootUntil(
        { kernel: vmlinuz, vcpus: 2, kernelCache, cmdline: 'console=ttyS0 earlyprintk=serial,ttyS0,115200' },
        /smpboot: Total of \d+ processors activated.*\r?\n/,
        600,
      );
      expect(loaded).toMatchObject({ protocol: 'pvh', decompressed: { compression: 'xz', fromCache: false } });
      expect(log).toContain('ACPI: Using ACPI (MADT) for SMP configuration information');
      expect(log).toContain('IOAPIC[0]: apic_id 2, version 17, address 0xfec00000, GSI 0-23');
      expect(log).toContain('smpboot: Allowing 2 CPUs, 0 hotplug CPUs');
      // The application processor started by INIT/SIPI through the in-kernel local APIC.
      expect(log).toContain('smp: Brought up 1 node, 2 CPUs');
      expect(log).toMatch(/smpboot: Total of 2 processors activated/);
      // The next boot of the same image reads the decompressed kernel from the cache.
      const again = createLinuxMachine({ kernel: vmlinuz, kernelCache });
      await again.vm.close();
      expect(again.loaded.decompressed).toEqual({ compression: 'xz', fromCache: true });
    } finally {
      rmSync(kernelCache, { recursive: true, force: true });
    }
  });

  it("enters its bzImage at the 64-bit entry, where the kernel's own decompressor reads our command line", async () => {
    // The decompressor runs in the guest: on a software-assisted host it takes many minutes,
    // but its first message shows it found the zero page and the command line in it.
    const { log, loaded } = await bootUntil(
      { kernel: vmlinuz, bzImage: 'standard', cmdline: 'console=ttyS0 earlyprintk=serial,ttyS0,115200 nokaslr' },
      /KASLR disabled: 'nokaslr' on cmdline\./,
      120,
    );
    expect(loaded).toEqual({ protocol: 'bzimage', entry: 0x10_0200 });
    expect(log).toContain("KASLR disabled: 'nokaslr' on cmdline.");
  });

  it('finds the CPUs and the IOAPIC in the MP table when ACPI is off', async () => {
    const { log } = await bootUntil(
      { kernel: vmlinux, vcpus: 2, cmdline: 'console=ttyS0 earlyprintk=serial,ttyS0,115200 acpi=off' },
      /Processors: \d+.*\r?\n/,
      300,
    );
    expect(log).toContain('found SMP MP-table at [mem 0x000f0000-0x000f000f]');
    expect(log).toContain('Intel MultiProcessor Specification v1.4');
    expect(log).toMatch(/Processor #0 \(Bootup-CPU\)[\s\S]*Processor #1\r?\n/);
    expect(log).toContain('IOAPIC[0]: apic_id 2, version 17, address 0xfec00000, GSI 0-23');
    expect(log).toContain('Processors: 2');
  });
});
