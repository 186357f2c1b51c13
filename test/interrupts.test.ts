import { expect, it } from 'vitest';
import type { Machine } from '../src/index.js';
import { closedAfterEach, ioRegisters, machineWith } from './guests.js';
import { describeKvm } from './kvm.js';

const track = closedAfterEach();

/** A guest that says "ready" on port 0x500, then waits for an interrupt whose handler exits with its vector. */
function waitingGuest(guest: 'irq' | 'msi', onReady: (vm: Machine) => void): Machine {
  const vm = machineWith(guest, { irqchip: true });
  track(vm);
  vm.addDebugExit(0xf4);
  vm.addPortDevice(0x500, 1, { name: 'ready', write: () => onReady(vm) });
  return vm;
}

describeKvm('interrupts', () => {
  it('reach the guest through an IRQ line and the PIC', async () => {
    const vm = waitingGuest('irq', (m) => m.pulseIrq(5));
    expect(await vm.run()).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x25 });
  });

  it('reach the guest through an irqfd', async () => {
    let irqfd: { trigger(): void; close(): void } | undefined;
    const vm = waitingGuest('irq', () => irqfd?.trigger());
    irqfd = vm.createIrqFd(5);
    expect(await vm.run()).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x25 });
    irqfd.close();
  });

  it('reach a 64-bit guest as an MSI through its local APIC', async () => {
    let delivered: boolean | undefined;
    const vm = waitingGuest('msi', (m) => {
      delivered = m.signalMsi(0xfee0_0000, 0x40);
    });
    expect(await vm.run()).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x40 });
    expect(delivered).toBe(true);
  });

  it('need the irqchip', () => {
    const vm = machineWith('irq');
    track(vm);
    expect(() => vm.pulseIrq(5)).toThrow(expect.objectContaining({ code: 'NO_IRQCHIP' }));
  });
});

describeKvm('ioeventfd', () => {
  it('counts matching guest writes inside the kernel, without exits', async () => {
    const run = async (withEventFd: boolean) => {
      const vm = machineWith('io');
      track(vm);
      const writes: [number, number | bigint][] = [];
      vm.addPortDevice(0x60, 8, ioRegisters(writes));
      vm.addNullDevice(0x70, 2);
      // The guest writes 0x80 to port 0x60: with the eventfd, the kernel takes it.
      const fd = withEventFd ? vm.createIoEventFd({ address: 0x60, length: 1, datamatch: 0x80n }) : undefined;
      expect(await vm.run()).toEqual({ reason: 'halted' });
      return { fd, written: writes.map(([port]) => port), exits: vm.stats()[0]?.exits['io-out'] ?? 0 };
    };
    const plain = await run(false);
    const counted = await run(true);
    expect(plain.written).toEqual([0x60, 0x62, 0x64]);
    expect(counted.written).toEqual([0x62, 0x64]);
    expect(counted.exits).toBe(plain.exits - 1);
    expect(counted.fd?.take()).toBe(1);
    expect(counted.fd?.take()).toBe(0);
    counted.fd?.close();
    counted.fd?.close();
  });

  it('closes at the end of a using scope, irqfd and ioeventfd alike', () => {
    const vm = machineWith('irq', { irqchip: true });
    track(vm);
    const escaped: { trigger?: () => void; take?: () => number } = {};
    {
      using irqfd = vm.createIrqFd(5);
      using ioeventfd = vm.createIoEventFd({ address: 0x60, length: 1 });
      irqfd.trigger();
      expect(ioeventfd.take()).toBe(0);
      escaped.trigger = () => irqfd.trigger();
      escaped.take = () => ioeventfd.take();
    }
    const closed = expect.objectContaining({ code: 'INVALID_STATE' });
    expect(() => escaped.trigger?.()).toThrow(closed);
    expect(() => escaped.take?.()).toThrow(closed);
  });

  it('rejects a datamatch without an access width', () => {
    const vm = machineWith('io');
    track(vm);
    expect(() => vm.createIoEventFd({ address: 0x60, datamatch: 1n })).toThrow(/datamatch needs the access width/);
  });
});
