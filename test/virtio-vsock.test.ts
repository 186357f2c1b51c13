import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
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

/**
 * Answers the guest's connection: echoes it back upper-cased and records what it saw; when
 * the guest has shut down, `then` runs (the guest then waits for a connection to its port 5000).
 */
function echo(socket: Socket, seen: string[], then: () => void): void {
  socket.on('data', (data: Buffer) => {
    seen.push(data.toString());
    socket.write(data.toString().toUpperCase());
  });
  socket.on('end', () => {
    socket.end();
    then();
  });
}

/** Sends `ping` on `socket`, which the guest echoes; resolves with the answer once the guest shut down. */
function ping(socket: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let answer = '';
    socket.setEncoding('utf8');
    socket.on('data', (data: string) => {
      answer += data;
      socket.end();
    });
    socket.on('end', () => resolve(answer));
    socket.on('error', reject);
    socket.write('ping');
  });
}

describeKvm('virtio-vsock', () => {
  it('carries a guest connection to a TypeScript listener and back, and resets a hostile guest', async () => {
    const { vm, vsock, console } = vsockGuest();
    expect(vsock.info).toEqual({ name: 'virtio-vsock', space: 'mmio', base: 0xc000_0000, length: 0x1000, irq: 5 });
    const seen: string[] = [];
    let answer: Promise<string> | undefined;
    const listener = vsock.listen(1234, (socket) =>
      echo(socket, seen, () => {
        answer = vsock.connect(5000).then(ping);
      }),
    );
    // Last, the guest connects to 1235: the host then connects to its port 6000, which it
    // never answers (it checks that the request is reset once the host gives up).
    let unanswered: Promise<unknown> | undefined;
    vsock.listen(1235, () => {
      unanswered = vsock.connect(6000, { timeoutMs: 200 }).catch((error: unknown) => error);
    });
    const outcome = await vm.run();
    expect(outcome).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x55 });
    expect(seen.join('')).toBe('hello, vsock');
    expect(await answer).toBe('ping');
    const timedOut = await unanswered;
    expect(timedOut).toMatchObject({ code: 'CONNECTION_TIMED_OUT' });
    expect(String(timedOut)).toMatch(
      /vsock port 6000 of guest CID 3: no answer in 200 ms; is anything listening on port 6000 in the guest/,
    );
    expect(Buffer.from(console.take()).toString()).toBe('HELLO, VSOCK');
    listener.close();
    listener.close();
  });

  it("reaches Firecracker's <uds>_<port> socket when no listener takes the port", async () => {
    const dir = tempDir();
    const uds = join(dir, 'v.sock');
    const seen: string[] = [];
    let answer: Promise<string> | undefined;
    // Firecracker's other direction: CONNECT on <uds>, answered with OK and the host port.
    const viaUds = async (): Promise<string> => {
      const socket = createConnection(uds);
      socket.write('CONNECT 5000\n');
      const [ok] = (await once(socket, 'data')) as [Buffer];
      expect(ok.toString()).toBe(`OK ${2 ** 30}\n`);
      return ping(socket);
    };
    const server = createServer((socket) =>
      echo(socket, seen, () => {
        answer = viaUds();
      }),
    );
    await new Promise<void>((resolve) => server.listen(`${uds}_1234`, resolve));
    try {
      const { vm, console } = vsockGuest(uds);
      const outcome = await vm.run();
      expect(outcome).toEqual({ reason: 'device-request', device: 'debug-exit', status: 0x55 });
      expect(seen.join('')).toBe('hello, vsock');
      expect(Buffer.from(console.take()).toString()).toBe('HELLO, VSOCK');
      expect(await answer).toBe('ping');
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
    expect(() => vsock.connect(5000, { timeoutMs: 0 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/options\.timeoutMs/) }),
    );
  });
});
