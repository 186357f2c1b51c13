import { expect, it } from 'vitest';
import { Machine } from '../src/index.js';
import { closedAfterEach } from './guests.js';
import { describeKvm } from './kvm.js';

const track = closedAfterEach();

/** A real-mode machine running `code` at 0x1000. */
function running(code: readonly number[], config: Partial<Parameters<typeof Machine.create>[0]> = {}): Machine {
  const vm = track(Machine.create({ memory: '64K', ...config }));
  vm.memory.write(0x1000, Uint8Array.from(code));
  vm.vcpu(0).setup({ mode: 'real', entry: 0x1000 });
  return vm;
}

describeKvm('built-in devices', () => {
  it('keep one output per debug console added', async () => {
    // mov al,'a' ; out 0xe9,al ; mov al,'b' ; out 0xea,al ; hlt
    const vm = running([0xb0, 0x61, 0xe6, 0xe9, 0xb0, 0x62, 0xe6, 0xea, 0xf4]);
    const first = vm.addDebugConsole();
    const second = vm.addDebugConsole(0xea);
    expect([first.port, second.port]).toEqual([0xe9, 0xea]);
    expect(await vm.run()).toEqual({ reason: 'halted' });
    expect(Buffer.from(first.take()).toString()).toBe('a');
    expect(Buffer.from(second.take()).toString()).toBe('b');
  });

  it('say where the registry put them', () => {
    const vm = running([0xf4]);
    expect(vm.addDebugExit()).toEqual({ name: 'debug-exit', space: 'port', base: 0xf4, length: 4 });
    expect(vm.addI8042()).toEqual({ name: 'i8042', space: 'port', base: 0x60, length: 5 });
    expect(vm.addRtc()).toEqual({ name: 'rtc', space: 'port', base: 0x70, length: 2 });
    expect(vm.addNullDevice(0xd000_0000, 0x100, { space: 'mmio' })).toEqual({
      name: 'null',
      space: 'mmio',
      base: 0xd000_0000,
      length: 0x100,
    });
    expect(vm.addSerial({ port: 0x2f8 }).port).toBe(0x2f8);
    expect(() => vm.addPortDevice(0xf7, 1, { name: 'x' })).toThrow(/overlaps debug-exit at 0xf4..0xf8/);
  });

  it('end the run with the value of a 2-byte write to any of the debug-exit ports', async () => {
    // mov ax,0x1234 ; out 0xf6,ax ; hlt
    const vm = running([0xb8, 0x34, 0x12, 0xe7, 0xf6, 0xf4]);
    vm.addDebugExit();
    expect(await vm.run()).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x1234 });
  });

  it('hand out MMIO windows in the 32-bit hole and free interrupt lines', () => {
    const vm = running([0xf4], { irqchip: true });
    expect(vm.allocateMmio(0x200)).toBe(0xc000_0000);
    vm.addMmioDevice(0xc000_1000, 0x1000, { name: 'placed' });
    expect(vm.allocateMmio(0x1000)).toBe(0xc000_2000);
    expect(() => vm.allocateMmio(0)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    vm.addSerial({ irq: 5 });
    vm.createIrqFd(6).close();
    expect(vm.allocateIrq()).toBe(7);
    expect(vm.allocateIrq()).toBe(9); // 8 is the CMOS clock's on every PC
  });
});
