import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { closedAfterEach, machineWith } from './guests.js';
import { describeKvm } from './kvm.js';

const track = closedAfterEach();
const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvmkit-vsock-'));
  dirs.push(dir);
  return dir;
}

/** The vsock guest with a debug console and exit; it connects to host port 1234. */
function vsockGuest(uds?: string) {
  const vm = track(machineWith('virtio-vsock', { memory: '4M', irqchip: true }));
  const vsock = vm.addVsock({ cid: 3, ...(uds === undefined ? {} : { uds }) });
  const console = vm.addDebugConsole();
  vm.addDebugExit(0xf4);
  return { vm, vsock, console };
}

/** Echoes `socket` back, upper-cased, and records what it saw. */
function echo(socket: Socket, seen: string[]): void {
  socket.on('data', (data: Buffer) => {
    seen.push(data.toString());
    socket.write(data.toString().toUpperCase());
  });
  socket.on('end', () => socket.end());
  socket.on('error', () => {});
}

describeKvm('virtio-vsock', () => {
  it('carries a guest connection to a TypeScript listener and back, and resets a hostile guest', async () => {
    const { vm, vsock, console } = vsockGuest();
    expect(vsock.info).toEqual({ name: 'virtio-vsock', space: 'mmio', base: 0xc000_0000, length: 0x1000, irq: 5 });
    const seen: string[] = [];
    const listener = vsock.listen(1234, (socket) => echo(socket, seen));
    const outcome = await vm.run();
    expect(outcome).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x55 });
    expect(seen.join('')).toBe('hello, vsock');
    expect(Buffer.from(console.take()).toString()).toBe('HELLO, VSOCK');
    listener.close();
    listener.close();
  });

  it("reaches Firecracker's <uds>_<port> socket when no listener takes the port", async () => {
    const dir = tempDir();
    const uds = join(dir, 'v.sock');
    const seen: string[] = [];
    const server = createServer((socket) => echo(socket, seen));
    await new Promise<void>((resolve) => server.listen(`${uds}_1234`, resolve));
    try {
      const { vm, console } = vsockGuest(uds);
      const outcome = await vm.run();
      expect(outcome).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x55 });
      expect(seen.join('')).toBe('hello, vsock');
      expect(Buffer.from(console.take()).toString()).toBe('HELLO, VSOCK');
    } finally {
      server.close();
    }
  });

  it('refuses reserved CIDs, bad socket paths and a port listened on twice', () => {
    const vm = track(machineWith('virtio-vsock', { memory: '4M', irqchip: true }));
    expect(() => vm.addVsock({ cid: 2 })).toThrow(
      expect.objectContaining({ code: 'INVALID_CONFIG', field: 'vsock.cid' }),
    );
    expect(() => vm.addVsock({ cid: 3, uds: join(tempDir(), 'missing', 'v.sock') })).toThrow(
      expect.objectContaining({ code: 'INVALID_CONFIG', field: 'vsock.uds' }),
    );
    expect(() => vm.addVsock({ cid: 3, uds: `/tmp/${'x'.repeat(120)}` })).toThrow(/too long for a Unix socket/);
    const vsock = vm.addVsock({ cid: 3 });
    vsock.listen(80, () => {});
    expect(() => vsock.listen(80, () => {})).toThrow(expect.objectContaining({ code: 'PORT_IN_USE' }));
    expect(() => vsock.listen(-1, () => {})).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    vsock.close();
    vsock.close();
    expect(() => vsock.listen(81, () => {})).toThrow(expect.objectContaining({ code: 'INVALID_STATE' }));
  });

  it('refuses a host connection while the guest has no driver running', async () => {
    const vm = track(machineWith('virtio-vsock', { memory: '4M', irqchip: true }));
    const vsock = vm.addVsock({ cid: 3 });
    await expect(vsock.connect(5000)).rejects.toMatchObject({ code: 'CONNECTION_REFUSED' });
  });
});
