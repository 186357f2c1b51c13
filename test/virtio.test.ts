import { expect, it } from 'vitest';
import { closedAfterEach, machineWith } from './guests.js';
import { describeKvm } from './kvm.js';

const track = closedAfterEach();

describeKvm('virtio-mmio and virtio-rng', () => {
  it('negotiate, serve requests with interrupts, reset, and survive a hostile driver', async () => {
    const vm = track(machineWith('virtio-rng', { memory: '4M', irqchip: true }));
    const rng = vm.addRng();
    expect(rng).toEqual({ name: 'virtio-rng', space: 'mmio', base: 0xc000_0000, length: 0x1000, irq: 5 });
    const console = vm.addDebugConsole();
    vm.addDebugExit(0xf4);
    const errors: unknown[] = [];
    vm.on('device-error', (e) => errors.push(e));
    const outcome = await vm.run();
    const printed = console.take();
    expect(outcome).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x55 });
    expect(printed.length).toBe(64);
    const [first, second] = [printed.subarray(0, 32), printed.subarray(32)];
    expect(first.some((b) => b !== 0)).toBe(true);
    expect(Buffer.compare(first, second)).not.toBe(0);
    // The two hostile drivers that break the device are reported, each once.
    expect(errors).toEqual([
      { device: 'virtio-rng', base: 0xc000_0000, message: 'queue 0: size 3 is not a power of two from 1 to 256' },
      {
        device: 'virtio-rng',
        base: 0xc000_0000,
        message: expect.stringMatching(/^queue 0: its rings .* are misaligned or not inside guest RAM$/),
      },
    ]);
  });

  it('needs the in-kernel irqchip', () => {
    const vm = track(machineWith('virtio-rng', { memory: '4M' }));
    expect(() => vm.addRng()).toThrow(expect.objectContaining({ code: 'NO_IRQCHIP' }));
  });

  it('gives each device its own window and interrupt line', () => {
    const vm = track(machineWith('virtio-rng', { memory: '4M', irqchip: true }));
    const [a, b] = [vm.addRng(), vm.addRng()];
    expect([a.base, a.irq, b.base, b.irq]).toEqual([0xc000_0000, 5, 0xc000_1000, 6]);
  });
});
