import { text } from 'node:stream/consumers';
import { finished } from 'node:stream/promises';
import { expect, it } from 'vitest';
import { closedAfterEach, letters, machineWith } from './guests.js';
import { describeKvm } from './kvm.js';

const track = closedAfterEach();

describeKvm('the 16550 serial port', () => {
  it('streams what the guest transmits and delivers what the host writes', async () => {
    const vm = track(machineWith('serial'));
    const serial = vm.addSerial();
    serial.input.write('x\n');
    const output = text(serial.output);
    expect(await vm.run()).toEqual({ reason: 'halted' });
    expect(await output).toBe('hi:x\n');
    // The UART's registers never left the vCPU thread: no access reached TypeScript.
    expect(vm.stats()[0]?.exits['io-out']).toBeGreaterThanOrEqual(5);
  });

  it('raises COM1 interrupts on a machine with the irqchip', async () => {
    const vm = track(machineWith('serial', { irqchip: true }));
    const serial = vm.addSerial({ port: 0x3f8 });
    serial.input.write('y\n');
    vm.addDebugExit(0xf4);
    const output = text(serial.output);
    vm.start();
    // With the irqchip, hlt waits inside KVM: the guest is done once it echoed.
    await new Promise<void>((resolve) => serial.output.on('data', (d: Buffer) => d.includes(10) && resolve()));
    vm.stop();
    await vm.wait();
    expect(await output).toBe('hi:y\n');
  });

  it('delivers more than the receive FIFO holds, in order, as the guest reads it', async () => {
    const vm = track(machineWith('serial'));
    const serial = vm.addSerial();
    const errors: Error[] = [];
    serial.input.on('error', (e) => errors.push(e));
    // The FIFO holds 64 bytes and the guest echoes one at a time: the rest waits in the
    // stream until the UART tells of room (the guest read the FIFO down to half).
    const sent = `${letters(2000)}\n`;
    const written = new Promise<void>((resolve) => serial.input.write(sent, () => resolve()));
    const output = text(serial.output);
    expect(await vm.run()).toEqual({ reason: 'halted' });
    await written;
    expect(await output).toBe(`hi:${sent}`);
    expect(errors).toEqual([]);
  });

  it('keeps input waiting while the guest has not read, without failing the stream', async () => {
    const vm = track(machineWith('serial'));
    const serial = vm.addSerial();
    const errors: Error[] = [];
    serial.input.on('error', (e) => errors.push(e));
    serial.input.write('y'.repeat(100)); // the FIFO holds 64; the guest reads nothing before it runs
    await new Promise(setImmediate);
    expect(serial.input.writableLength).toBe(100); // the write waits for room
    expect(errors).toEqual([]);
  });

  it('fails a write the guest never took when the run ends, without an error event', async () => {
    // The flood guest never reads its receive FIFO: 64 of the 100 bytes fit, the rest waits.
    const vm = track(machineWith('flood'));
    const serial = vm.addSerial();
    const errors: Error[] = [];
    serial.input.on('error', (e) => errors.push(e));
    const written = new Promise<unknown>((resolve) => serial.input.write('y'.repeat(100), resolve));
    const queued = new Promise<unknown>((resolve) => serial.input.write('z', resolve));
    vm.start();
    vm.stop();
    expect(await vm.wait()).toEqual({ reason: 'stopped' });
    const failure = expect.objectContaining({
      code: 'INVALID_STATE',
      message: "input not delivered: the guest had not taken 36 of the write's 100 bytes when the run ended (stopped)",
    });
    expect(await written).toEqual(failure);
    expect(await queued).toEqual(failure); // the write behind it fails the same way
    await expect(finished(serial.input)).rejects.toEqual(failure);
    expect(serial.input.destroyed).toBe(true);
    const later = new Promise<unknown>((resolve) => serial.input.write('w', resolve));
    expect(await later).toEqual(expect.objectContaining({ code: 'ERR_STREAM_DESTROYED' }));
    expect(errors).toEqual([]);
  });

  it('fails a waiting write and ends the output when the machine is closed before it ran', async () => {
    const vm = machineWith('serial');
    const serial = vm.addSerial();
    const written = new Promise<unknown>((resolve) => serial.input.write('y'.repeat(100), resolve));
    const output = text(serial.output);
    await vm.close();
    expect(await written).toEqual(
      expect.objectContaining({
        code: 'INVALID_STATE',
        message:
          "input not delivered: the guest had not taken 36 of the write's 100 bytes when the machine was closed before it ran",
      }),
    );
    expect(await output).toBe('');
  });

  it('lets a guest flood it while nobody reads the output, holding the rest in the UART', async () => {
    const vm = track(machineWith('flood'));
    const serial = vm.addSerial();
    const buffered = serial.output.readableHighWaterMark;
    vm.start();
    // The guest counts 4 KiB rounds at 0x500: wait until it sent 64 KiB past what the
    // stream buffers, none of it read.
    const rounds = (buffered + 64 * 1024) / 4096;
    while (vm.memory.readU32(0x500) < rounds) {
      expect(vm.state).toBe('running');
      await new Promise((r) => setTimeout(r, 20));
    }
    // Node holds about one buffer's worth; the rest waits in the UART's bounded buffer
    // (the latest 1 MiB is kept, older bytes dropped: see ConsoleOutput).
    expect(serial.output.readableLength).toBeLessThanOrEqual(2 * buffered);
    vm.stop();
    expect(await vm.wait()).toEqual({ reason: 'stopped' });
    const sent = vm.memory.readU32(0x500) * 4096;
    const received = Buffer.concat(await serial.output.toArray());
    expect(received.length).toBeGreaterThanOrEqual(sent);
    expect(received.length).toBeLessThan(sent + 4096);
    expect(received.every((b) => b === 0x78)).toBe(true); // 'x'
  });

  it('refuses a port range another device has', () => {
    const vm = track(machineWith('serial'));
    vm.addSerial();
    expect(() => vm.addSerial({ port: 0x3fc })).toThrow(/overlaps serial/);
  });
});
