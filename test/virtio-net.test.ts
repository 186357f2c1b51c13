import { expect, it } from 'vitest';
import { createSwitch, type Machine } from '../src/index.js';
import { closedAfterEach, machineWith } from './guests.js';
import { describeKvm } from './kvm.js';
import { cannotCreateTaps, deleteTap, makeTap } from './tap.js';

const track = closedAfterEach();

const GUEST_MAC = '02:00:00:00:00:0a';
const HOST_MAC = Buffer.from('020000000001', 'hex');
const BROADCAST = Buffer.alloc(6, 0xff);
const SUCCESS = { reason: 'device-request', device: 'debug-exit', status: 0x55 };

/** The net guest with its device (the first virtio device) and a debug exit. */
function netGuest(): Machine {
  const vm = track(machineWith('virtio-net', { memory: '4M', irqchip: true }));
  vm.addDebugExit(0xf4);
  return vm;
}

/** An Ethernet frame from `source` to `destination` with EtherType 0x88b5 (local experimental). */
function frame(destination: Buffer, source: Buffer, payload: string): Buffer {
  return Buffer.concat([destination, source, Buffer.of(0x88, 0xb5), Buffer.from(payload)]);
}

const mac = (text: string) => Buffer.from(text.replaceAll(':', ''), 'hex');

describeKvm('virtio-net', () => {
  it('hands transmitted frames to TypeScript and delivers the frames it sends', async () => {
    const vm = netGuest();
    const seen: Buffer[] = [];
    const net = vm.addNet({
      mac: GUEST_MAC,
      frames: (f) => {
        seen.push(f);
        if (seen.length === 1) {
          net.send(frame(BROADCAST, HOST_MAC, 'anyone?')); // the guest answers a broadcast
        } else {
          net.send(frame(mac(GUEST_MAC), HOST_MAC, 'done')); // and stops at a frame for it
        }
      },
    });
    expect(net.info).toMatchObject({ name: 'virtio-net', base: 0xc000_0000, irq: 5 });
    expect(net.mac).toBe(GUEST_MAC);
    expect(await vm.run()).toEqual(SUCCESS);
    const [arp, answer] = seen;
    // The ARP request, header stripped: broadcast, from the MAC the host gave it.
    expect(arp?.subarray(0, 12)).toEqual(Buffer.concat([BROADCAST, mac(GUEST_MAC)]));
    expect(arp?.readUInt16BE(12)).toBe(0x0806);
    expect(arp?.length).toBe(42);
    expect(answer).toEqual(frame(HOST_MAC, mac(GUEST_MAC), 'anyone?'));
    // The runt the guest sent first was dropped, and the device went on.
    expect(net.counters).toEqual({ rxFrames: 2, rxDropped: 0, txFrames: 2, txDropped: 1 });
  });

  it('connects two machines through a switch', async () => {
    const lan = createSwitch();
    const [a, b] = [netGuest(), netGuest()];
    const netA = a.addNet({ switch: lan, mac: '02:00:00:00:00:0a' });
    const netB = b.addNet({ switch: lan, mac: '02:00:00:00:00:0b' });
    expect(lan.ports).toEqual([netA, netB]);
    // Each broadcasts, answers the other's broadcast, and ends at the answer to its own.
    expect(await Promise.all([a.run(), b.run()])).toEqual([SUCCESS, SUCCESS]);
    for (const net of [netA, netB]) {
      expect(net.counters).toEqual({ rxFrames: 2, rxDropped: 0, txFrames: 2, txDropped: 1 });
    }
  });

  it('drops frames past 256 while the guest posts no buffers, and counts them', () => {
    const vm = netGuest();
    const net = vm.addNet({ frames: () => {} });
    const sent = Array.from({ length: 300 }, () => net.send(frame(BROADCAST, HOST_MAC, 'x')));
    expect(sent.filter(Boolean).length).toBe(256);
    expect(net.counters.rxDropped).toBe(44);
  });

  it('gives each device a random locally administered MAC unless told one', () => {
    const vm = netGuest();
    const [a, b] = [vm.addNet({ frames: () => {} }), vm.addNet({ frames: () => {} })];
    for (const net of [a, b]) {
      expect(net.mac).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
      expect(Number.parseInt(net.mac.slice(0, 2), 16) & 3).toBe(2);
    }
    expect(a.mac).not.toBe(b.mac);
  });

  it('refuses bad options with a typed error', () => {
    const vm = netGuest();
    const bad = (options: unknown) => () => vm.addNet(options as never);
    expect(bad({ frames: () => {}, mac: '01:00:5e:00:00:01' })).toThrow(/multicast/);
    expect(bad({ frames: () => {}, mac: '02:00:00:00:00' })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(bad({ frames: () => {}, mtu: 20 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(bad({})).toThrow(/exactly one of tap, frames or switch/);
    expect(bad({ tap: 'kvmkit-none0' })).toThrow(expect.objectContaining({ code: 'TAP_NOT_FOUND' }));
    expect(bad({ tap: 'lo' })).toThrow(
      expect.objectContaining({ code: 'TAP_NOT_FOUND', message: expect.stringMatching(/not a TAP/) }),
    );
    const net = vm.addNet({ frames: () => {} });
    expect(() => net.send(Buffer.alloc(4))).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});

const noTap = cannotCreateTaps();

describeKvm('virtio-net on a TAP', () => {
  it.skipIf(noTap !== undefined)(
    `reaches the host's network stack${noTap === undefined ? '' : ` (skipped: ${noTap})`}`,
    async () => {
      const tap = `kvmkit${process.pid % 100_000}`;
      makeTap(tap, '10.0.0.1/24');
      try {
        const vm = netGuest();
        const net = vm.addNet({ tap, mac: GUEST_MAC });
        // The guest asks who has 10.0.0.1; the host's kernel answers to its MAC, which ends it.
        expect(await vm.run()).toEqual(SUCCESS);
        expect(net.counters.txFrames).toBeGreaterThanOrEqual(1);
        expect(net.counters.rxFrames).toBeGreaterThanOrEqual(1);
      } finally {
        deleteTap(tap);
      }
    },
  );
});
