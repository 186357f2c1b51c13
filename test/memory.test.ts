import { existsSync, readFileSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { type DebugConsole, Machine } from '../src/index.js';
import { closedAfterEach } from './guests.js';
import { describeKvm } from './kvm.js';

const track = closedAfterEach();

// Real mode at 0x1000: mov byte [0x2000],0x5a ; mov al,[0x2001] ; out 0xe9,al ; hlt
const CODE = Uint8Array.of(0xc6, 0x06, 0x00, 0x20, 0x5a, 0xa0, 0x01, 0x20, 0xe6, 0xe9, 0xf4);

/** A machine ready to run CODE, with the debug console it prints to. */
function machine(config: Partial<Parameters<typeof Machine.create>[0]> = {}): { vm: Machine; console: DebugConsole } {
  const vm = Machine.create({ memory: '64K', ...config });
  track(vm);
  vm.vcpu(0).setup({ mode: 'real', entry: 0x1000 });
  return { vm, console: vm.addDebugConsole() };
}

const THP = existsSync('/sys/kernel/mm/transparent_hugepage/enabled')
  ? !readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8').includes('[never]')
  : false;

describeKvm('guest memory', () => {
  it('gives zero-copy views the guest shares, which stay readable after close', async () => {
    const { vm, console } = machine();
    const code = vm.memory.view(0x1000, CODE.length);
    code.set(CODE);
    const data = vm.memory.view(0x2000, 2);
    data[1] = 0x77;
    expect(await vm.run()).toEqual({ reason: 'halted' });
    expect([...console.take()]).toEqual([0x77]);
    expect(data[0]).toBe(0x5a);
    expect(vm.memory.readU8(0x2000)).toBe(0x5a);
    await vm.close();
    expect([...data]).toEqual([0x5a, 0x77]);
    data[0] = 1; // harmless: the mapping lives until the view is collected, and no guest uses it
    expect(() => vm.memory.view(0x3000, 1)).toThrow(/the machine is closed/);
  });

  it('refuses views outside one region', () => {
    const { vm } = machine({
      memory: [
        { guestAddr: 0, size: '8K' },
        { guestAddr: 0x3000, size: '4K' },
      ],
    });
    expect(vm.memory.regions).toEqual([
      { guestAddr: 0, size: 8192 },
      { guestAddr: 0x3000, size: 4096 },
    ]);
    expect(() => vm.memory.view(0x1ff0, 0x20)).toThrow(expect.objectContaining({ code: 'GUEST_MEMORY_RANGE' }));
    expect(vm.memory.view(0x3ff0, 0x10).length).toBe(0x10);
  });

  it('can be a memfd another reader shares through its fd', async () => {
    const { vm } = machine({ backing: 'memfd' });
    vm.memory.write(0x1000, CODE);
    expect(await vm.run()).toEqual({ reason: 'halted' });
    const fd = vm.memory.fd;
    expect(typeof fd).toBe('number');
    const byte = Buffer.alloc(1);
    readSync(fd ?? -1, byte, 0, 1, 0x2000);
    expect(byte[0]).toBe(0x5a);
    await vm.close();
    expect(vm.memory.fd).toBeUndefined();
  });

  it('can be a file that holds the guest RAM', async () => {
    const path = join(tmpdir(), `kvmkit-ram-${process.pid}`);
    const { vm } = machine({ backing: { file: path } });
    vm.memory.write(0x1000, CODE);
    expect(await vm.run()).toEqual({ reason: 'halted' });
    await vm.close();
    const file = readFileSync(path);
    rmSync(path);
    expect(file.length).toBe(64 * 1024);
    expect(file[0x2000]).toBe(0x5a);
  });

  it.runIf(THP)('can ask for transparent huge pages', async () => {
    const { vm } = machine({ memory: '4M', hugePages: true });
    vm.memory.write(0x1000, CODE);
    expect(await vm.run()).toEqual({ reason: 'halted' });
  });
});

describeKvm('guest memory past 3 GiB', () => {
  it('leaves the 32-bit hole free and continues at 4 GiB', () => {
    const vm = track(Machine.create({ memory: '4G' }));
    expect(vm.memory.regions).toEqual([
      { guestAddr: 0, size: 3 * 2 ** 30 },
      { guestAddr: 2 ** 32, size: 2 ** 30 },
    ]);
    expect(() => vm.memory.read(0xfec0_0000, 4)).toThrow(expect.objectContaining({ code: 'GUEST_MEMORY_RANGE' }));
    vm.addMmioDevice(0xc000_0000, 0x1000, { name: 'in-the-hole' });
  });

  it('is read and written by a 64-bit guest above 4 GiB', async () => {
    const vm = track(Machine.create({ memory: '4G' }));
    // The identity map covers 4 GiB: the guest maps the next 2 MiB itself (PDPT[4] -> a PD at 0x30000).
    const code = [
      ...[0x48, 0xb8, 0x83, 0, 0, 0, 1, 0, 0, 0], // mov rax,0x1_0000_0083 (4 GiB, 2 MiB page, RW, P)
      ...[0x48, 0x89, 0x04, 0x25, 0x00, 0x00, 0x03, 0x00], // mov [0x30000],rax
      ...[0x48, 0xb8, 0x03, 0x00, 0x03, 0, 0, 0, 0, 0], // mov rax,0x30003
      ...[0x48, 0x89, 0x04, 0x25, 0x20, 0xa0, 0x00, 0x00], // mov [0xa020],rax (PDPT entry 4)
      ...[0x0f, 0x20, 0xd8, 0x0f, 0x22, 0xd8], // mov rax,cr3 ; mov cr3,rax
      ...[0x48, 0xbb, 0, 0, 0, 0, 1, 0, 0, 0], // mov rbx,0x1_0000_0000
      ...[0x8b, 0x03, 0x83, 0xc0, 0x01, 0x89, 0x43, 0x04], // mov eax,[rbx] ; add eax,1 ; mov [rbx+4],eax
      0xf4, // hlt
    ];
    vm.memory.write(0x10_0000, Uint8Array.from(code));
    vm.memory.writeU32(2 ** 32, 41);
    vm.vcpu(0).setup({ mode: 'long', entry: 0x10_0000 });
    expect(await vm.run()).toEqual({ reason: 'halted' });
    expect(vm.memory.readU32(2 ** 32 + 4)).toBe(42);
  });
});
