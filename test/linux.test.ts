import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import {
  createLinuxMachine,
  createSwitch,
  hardwareVirtualization,
  maskCpuid,
  SOFTWARE_KVM_CPUID_MASKS,
  withHostWorkarounds,
} from '../src/index.js';
import { tempFile } from './guests.js';
import { describeKvm } from './kvm.js';

it('hides the features a software-assisted KVM cannot run', () => {
  const leaf1 = { function: 1, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0xffff_ffff, edx: 0xffff_ffff };
  const [masked] = maskCpuid([leaf1], SOFTWARE_KVM_CPUID_MASKS);
  expect((masked?.ecx ?? 0) & (1 << 13)).toBe(0); // CMPXCHG16B
  expect((masked?.ecx ?? 0) & (1 << 26)).toBe(0); // XSAVE
  expect(masked?.edx).toBe(0xffff_ffff);
});

it('adds the kernel parameters a software-assisted KVM needs, once', () => {
  const cmdline = withHostWorkarounds('console=ttyS0 noxsave');
  if (hardwareVirtualization()) {
    expect(cmdline).toBe('console=ttyS0 noxsave');
  } else {
    expect(cmdline).toBe('console=ttyS0 noxsave clearcpuid=smap,popcnt');
  }
});

describeKvm('loading Linux', () => {
  it('refuses a kernel that is neither an x86-64 ELF nor a bzImage, naming the file', () => {
    const junk = tempFile('junk', new Uint8Array(4096).fill(0x41));
    expect(() => createLinuxMachine({ kernel: junk })).toThrow(
      expect.objectContaining({
        code: 'BAD_IMAGE',
        message: expect.stringContaining(`kernel ${junk}: neither an ELF vmlinux nor a bzImage`),
      }),
    );
    // A truncated ELF header.
    const truncated = tempFile('truncated', Uint8Array.of(0x7f, 0x45, 0x4c, 0x46, 2, 1, 1));
    expect(() => createLinuxMachine({ kernel: truncated })).toThrow(/an ELF file cut short/);
    expect(() => createLinuxMachine({ kernel: '/nonexistent/vmlinux' })).toThrow(/kernel \/nonexistent\/vmlinux: /);
  });
});

describeKvm('the virtio devices of a Linux machine', () => {
  const kernel = fileURLToPath(new URL('../guests/build/linux64.elf', import.meta.url));

  it('adds the console and the network devices asked for, in order, before the kernel', async () => {
    const lan = createSwitch();
    const { vm, virtioConsole, net } = createLinuxMachine({
      kernel,
      memory: '32M',
      virtioConsole: true,
      net: [{ switch: lan }, { frames: () => {}, mac: '02:00:00:00:00:02' }],
    });
    try {
      expect(virtioConsole?.info).toMatchObject({ name: 'virtio-console', base: 0xc000_0000, irq: 5 });
      expect(net.map((n) => [n.info.base, n.info.irq])).toEqual([
        [0xc000_1000, 6],
        [0xc000_2000, 7],
      ]);
      expect(net[1]?.mac).toBe('02:00:00:00:00:02');
      expect(lan.ports).toEqual([net[0]]);
    } finally {
      await vm.close();
    }
    const plain = createLinuxMachine({ kernel, memory: '32M' });
    expect(plain).toMatchObject({ virtioConsole: undefined, net: [] });
    await plain.vm.close();
  });

  it('refuses a bad network device, naming it', () => {
    expect(() =>
      createLinuxMachine({ kernel, memory: '32M', net: [{ frames: () => {}, mac: 'ff:ff:ff:ff:ff:ff' }] }),
    ).toThrow(
      expect.objectContaining({
        code: 'INVALID_ARGUMENT',
        message: expect.stringMatching(/^options\.mac: .*multicast/),
      }),
    );
  });
});
