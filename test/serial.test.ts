import { text } from 'node:stream/consumers';
import { expect, it } from 'vitest';
import { closedAfterEach, machineWith } from './guests.js';
import { describeKvm } from './kvm.js';

const track = closedAfterEach();

describeKvm('the 16550 serial port', () => {
  it('streams what the guest transmits and delivers what the host writes', async () => {
    const vm = track(machineWith('serial'));
    const serial = vm.addSerial();
    serial.input.write('x');
    const output = text(serial.output);
    expect(await vm.run()).toEqual({ reason: 'halted' });
    expect(await output).toBe('hi:x\n');
    // The UART's registers never left the vCPU thread: no access reached TypeScript.
    expect(vm.stats()[0]?.exits['io-out']).toBeGreaterThanOrEqual(5);
  });

  it('raises COM1 interrupts on a machine with the irqchip', async () => {
    const vm = track(machineWith('serial', { irqchip: true }));
    const serial = vm.addSerial({ port: 0x3f8 });
    serial.input.write('y');
    vm.addDebugExit(0xf4);
    const output = text(serial.output);
    vm.start();
    // With the irqchip, hlt waits inside KVM: the guest is done once it echoed.
    await new Promise<void>((resolve) => serial.output.on('data', (d: Buffer) => d.includes(10) && resolve()));
    vm.stop();
    await vm.wait();
    expect(await output).toBe('hi:y\n');
  });

  it('refuses a port range another device has', () => {
    const vm = track(machineWith('serial'));
    vm.addSerial();
    expect(() => vm.addSerial({ port: 0x3fc })).toThrow(/overlaps serial/);
  });
});
