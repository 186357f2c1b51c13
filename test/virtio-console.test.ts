import { text } from 'node:stream/consumers';
import { expect, it } from 'vitest';
import { closedAfterEach, letters, machineWith } from './guests.js';
import { describeKvm } from './kvm.js';

const track = closedAfterEach();

describeKvm('virtio-console', () => {
  it('streams what the guest transmits and delivers what the host writes into its receive buffers', async () => {
    const vm = track(machineWith('virtio-console', { memory: '4M', irqchip: true }));
    const hvc0 = vm.addVirtioConsole();
    expect(hvc0.info).toEqual({ name: 'virtio-console', space: 'mmio', base: 0xc000_0000, length: 0x1000, irq: 5 });
    vm.addDebugExit(0xf4);
    hvc0.input.write('ping\n');
    const output = text(hvc0.output);
    expect(await vm.run()).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x55 });
    expect(await output).toBe('hello from hvc0\nping\n');
    expect(hvc0.dropped).toBe(0);
    // Register set-up aside, output costs no exit: a chain is one notification through an
    // ioeventfd, where the 16550 takes two exits per byte.
    const exits = vm.stats()[0]?.exits;
    expect((exits?.['mmio-read'] ?? 0) + (exits?.['mmio-write'] ?? 0)).toBeLessThan(40);
  });

  it('delivers more input than it queues, in order, as the guest posts receive buffers', async () => {
    const vm = track(machineWith('virtio-console', { memory: '4M', irqchip: true }));
    const hvc0 = vm.addVirtioConsole();
    vm.addDebugExit(0xf4);
    // Twice the 64 KiB the device queues, to a guest taking 64 bytes per receive buffer:
    // the rest waits in the stream until the device tells of room.
    const sent = `${letters(128 * 1024)}\n`;
    const written = new Promise<void>((resolve) => hvc0.input.write(sent, () => resolve()));
    const output = text(hvc0.output);
    expect(await vm.run()).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x55 });
    await written;
    expect(await output).toBe(`hello from hvc0\n${sent}`);
  });

  it('fails a write the guest never took when the run ends, without an error event', async () => {
    // The spin guest never drives the device: it queues 64 KiB of input, the rest waits.
    const vm = track(machineWith('spin', { memory: '4M', irqchip: true }));
    const hvc0 = vm.addVirtioConsole();
    const errors: Error[] = [];
    hvc0.input.on('error', (e) => errors.push(e));
    const written = new Promise<unknown>((resolve) => hvc0.input.write(letters(64 * 1024 + 100), resolve));
    vm.start();
    vm.stop();
    expect(await vm.wait()).toEqual({ reason: 'stopped' });
    expect(await written).toEqual(
      expect.objectContaining({
        code: 'INVALID_STATE',
        message:
          "input not delivered: the guest had not taken 100 of the write's 65636 bytes when the run ended (stopped)",
      }),
    );
    expect(errors).toEqual([]);
  });

  it('needs the in-kernel irqchip', () => {
    const vm = track(machineWith('virtio-console', { memory: '4M' }));
    expect(() => vm.addVirtioConsole()).toThrow(expect.objectContaining({ code: 'NO_IRQCHIP' }));
  });
});
