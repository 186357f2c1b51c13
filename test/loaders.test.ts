/**
 * The loaders from TypeScript, on the stand-in kernels in guests/: an ELF vmlinux entered
 * through the 64-bit boot protocol (powering off through ACPI), a Multiboot kernel with a
 * module, and a flat binary.
 */
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { guestPath } from '../src/guests.js';
import { type DebugConsole, Machine } from '../src/index.js';
import { closedAfterEach, tempFile } from './guests.js';
import { describeKvm } from './kvm.js';

const built = (name: string) => fileURLToPath(new URL(`../guests/build/${name}`, import.meta.url));

const text = (console: DebugConsole) => Buffer.from(console.take()).toString('latin1');

describeKvm('loaders', () => {
  const track = closedAfterEach();

  it('boots an ELF vmlinux that finds its command line and powers off through ACPI', async () => {
    const vm = track(Machine.create({ memory: '32M' }));
    const com1 = vm.addSerial();
    let printed = '';
    com1.output.on('data', (chunk: Buffer) => {
      printed += chunk.toString('latin1');
    });
    const loaded = vm.loadLinux(built('linux64.elf'), undefined, 'from typescript', { kernelCache: false });
    expect(loaded).toEqual({ protocol: 'linux64', entry: 0x100_0000 });
    expect(await vm.run()).toEqual({ reason: 'shutdown', vcpu: 0 });
    await new Promise((resolve) => setImmediate(resolve));
    expect(printed).toBe('from typescript 3');
  });

  it('boots a Multiboot kernel with a module', async () => {
    const vm = track(Machine.create({ memory: '16M' }));
    const console = vm.addDebugConsole();
    vm.addDebugExit();
    const module = tempFile('module', 'the module');
    const loaded = vm.loadMultiboot(built('multiboot.elf'), 'console=none', [{ path: module, cmdline: 'mod' }]);
    expect(loaded.modules).toHaveLength(1);
    expect(loaded.modules[0]?.end).toBe((loaded.modules[0]?.start ?? 0) + 10);
    expect(await vm.run()).toEqual({ reason: 'device-request', device: 'debug-exit', status: 15 * 1024 });
    expect(text(console)).toBe('console=none the module');
  });

  it('leaves a Multiboot kernel the machine a PC BIOS leaves: interrupt table, ACPI tables, PICs at 0x08/0x70', async () => {
    const vm = track(Machine.create({ memory: '16M', irqchip: true }));
    vm.addDebugExit();
    vm.loadMultiboot(built('mbfirmware.elf'));
    // IRQ 0 from the PIT, which the guest starts, arrives at the BIOS's vector for it.
    expect(await vm.run()).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x08 });
    // The slave's first vector (IRQ 8) leads into the BIOS segment too.
    const ivt = Buffer.from(vm.memory.read(0, 0x400));
    expect(ivt.readUInt16LE(0x70 * 4 + 2)).toBe(0xf000);
  });

  it('refuses what it cannot load, naming the file', () => {
    const vm = track(Machine.create({ memory: '16M' }));
    const text = tempFile('not-a-kernel', 'hello');
    expect(() => vm.loadMultiboot(text)).toThrow(
      expect.objectContaining({
        code: 'BAD_IMAGE',
        message: expect.stringContaining(`kernel ${text}: no Multiboot header`),
      }),
    );
    expect(() => vm.loadFlat(tempFile('empty', ''), { address: 0x1000, mode: 'real' })).toThrow(/the file is empty/);
    expect(() => vm.loadFlat(guestPath('demo'), { address: 16 * 1024 * 1024 - 8, mode: 'long' })).toThrow(
      /do not fit in guest RAM/,
    );
  });

  it('runs a flat binary at its address', async () => {
    const vm = track(Machine.create({ memory: '2M' }));
    const console = vm.addDebugConsole();
    const end = vm.loadFlat(guestPath('demo'), { address: 0x10_0000, mode: 'long' });
    expect(end).toBeGreaterThan(0x10_0000);
    vm.addPortDevice(0x3f8, 1, { name: 'greeting' });
    vm.addPortDevice(0x510, 4, { name: 'answer', read: () => 42 });
    vm.addMmioDevice(0xd000_0000, 8, { name: 'register' });
    expect(await vm.run()).toEqual({ reason: 'halted' });
    expect(text(console)).toBe('42\n');
  });
});
