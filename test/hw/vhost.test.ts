/**
 * Debian's virtio drivers on kvmkit's vhost backends, in the test machine (which has
 * /dev/vhost-net and /dev/vhost-vsock): one guest whose first network device (eth0) is served
 * by vhost-net on a TAP the test makes, and whose vsock device is served by vhost-vsock. The
 * guest side is test/hw/virtio-guest.sh (`kvmkit.test=virtio`): it pings the TAP's address,
 * and sends a line to the host's vsock port through vsock-cat, which an `AF_VSOCK` listener
 * (python3; Node has no AF_VSOCK) answers; then it resets both devices (unbinding their
 * drivers) and does it again. The host pings the guest and prints the round-trip times, on
 * eth0 and, for comparison, on eth1: a second TAP served by kvmkit's own backend.
 */
import { type ChildProcessWithoutNullStreams, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixture, initramfs, marker, type RunningLinux, startLinux, vmlinuz } from '../boot/debian.js';
import { deleteTap, makeTap } from '../tap.js';
import { describeHw } from './hardware.js';

const vsockPort = 5001;
const hostAddress = '10.0.3.1';
const guestAddress = '10.0.3.2';
/** eth1, on kvmkit's own TAP backend. */
const host1Address = '10.0.4.1';
const guest1Address = '10.0.4.2';

/**
 * An AF_VSOCK listener on `port` in this (host) kernel for two connections (before and after
 * the guest rebinds its driver): answers a line with `pong: LINE` and prints the peer's CID.
 */
const LISTENER = `
import socket, sys
s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
s.bind((socket.VMADDR_CID_ANY, int(sys.argv[1])))
s.listen(1)
for _ in range(2):
    c, (cid, port) = s.accept()
    line = b""
    while b"\\n" not in line:
        chunk = c.recv(4096)
        if not chunk:
            break
        line += chunk
    c.sendall(b"pong: " + line.strip() + b"\\n")
    c.close()
    print("peer", cid, flush=True)
`;

/**
 * busybox from the fixtures' busybox-static package, for its ping (hosts may have no
 * ping(8)), unpacked once into a temporary directory.
 */
const busybox = (() => {
  let path: string | undefined;
  return () => {
    if (path === undefined) {
      const deb = readdirSync(fixture('debs')).find((f) => f.startsWith('busybox-static_'));
      if (deb === undefined) {
        throw new Error('no busybox-static package in fixtures/cache/debs: run scripts/fixtures.sh');
      }
      const dir = mkdtempSync(join(tmpdir(), 'kvmkit-busybox-'));
      execFileSync('dpkg-deb', ['-x', join(fixture('debs'), deb), dir]);
      path = join(dir, 'bin', 'busybox');
    }
    return path;
  };
})();

/** The host pings the guest at `address` `count` times and returns ping's summary line (`round-trip min/avg/max = …`). */
function pingGuest(address: string, count: number): string {
  const out = execFileSync(busybox(), ['ping', '-c', String(count), '-i', '0.2', '-W', '2', address], {
    encoding: 'utf8',
  });
  return out.match(/^(?:rtt|round-trip) .*$/m)?.[0] ?? out;
}

const cmdline = `console=ttyS0 panic=-1 kvmkit.test=virtio kvmkit.wait kvmkit.ip=${guestAddress}/24 kvmkit.ping=${hostAddress} kvmkit.ip1=${guest1Address}/24`;

describeHw("Debian's virtio drivers on vhost-net and vhost-vsock", () => {
  describe('one guest with both', () => {
    const tap = 'kvmkitvh0';
    const tap1 = 'kvmkitvh1';
    let listener: ChildProcessWithoutNullStreams;
    let heard = '';
    let guest: RunningLinux;
    let log = '';

    beforeAll(async () => {
      makeTap(tap, `${hostAddress}/24`);
      makeTap(tap1, `${host1Address}/24`);
      listener = spawn('python3', ['-c', LISTENER, String(vsockPort)]);
      listener.stdout.on('data', (chunk: Buffer) => {
        heard += chunk.toString();
      });
      listener.stderr.on('data', (chunk: Buffer) => {
        heard += chunk.toString();
      });
      guest = startLinux(
        {
          kernel: vmlinuz,
          initrd: initramfs,
          cmdline: `${cmdline} kvmkit.vsock=${vsockPort} kvmkit.rebind`,
          net: [
            { tap, mac: '02:00:00:00:03:02', vhost: true },
            { tap: tap1, mac: '02:00:00:00:04:02' },
          ],
          vsock: { cid: 3, vhost: true },
        },
        'vhost: net and vsock',
      );
      await guest.waitFor(/^KVMKIT-VIRTIO-DONE/m, 300);
      log = guest.log();
    }, 330_000);

    afterAll(async () => {
      listener?.kill();
      await guest?.close();
      deleteTap(tap);
      deleteTap(tap1);
    });

    it('binds virtio_net and the vsock transport to the vhost devices', () => {
      expect(log).not.toMatch(/^KVMKIT-\S+ FAIL/m);
      expect(marker(log, 'VIRTIO-DEVICES')?.split(' ').sort()).toEqual(
        ['0x0001=virtio_net', '0x0001=virtio_net', '0x0013=vmw_vsock_virtio_transport'].sort(),
      );
    });

    it("pings the host's address on the TAP through vhost-net, and answers the host's pings", () => {
      expect(marker(log, 'PING')).toMatch(new RegExp(`^ok ${hostAddress} `));
      const rtt = pingGuest(guestAddress, 20);
      console.log(`vhost-net (eth0): host pings guest: ${rtt}`);
      expect(rtt).toMatch(/ = [\d.]+\/[\d.]+\/[\d.]+/);
      console.log(`kvmkit's TAP backend (eth1), for comparison: ${pingGuest(guest1Address, 20)}`);
    });

    it('round-trips a line with an AF_VSOCK listener of the host through vhost-vsock', () => {
      expect(marker(log, 'VSOCK')).toBe(`ok ${vsockPort} answered: pong: hello from the guest`);
      expect(heard).toContain('peer 3');
    });

    it('serves both again after the driver resets them and sets them up anew', () => {
      expect(marker(log, 'REBIND')).toMatch(
        /^ok( virtio\d+){3}: ping after \d+ lost, vsock answered: pong: hello again$/,
      );
      expect(marker(log, 'REBIND')).not.toContain('after 30 lost');
      expect(heard.match(/peer 3/g)).toHaveLength(2);
    });

    it('powers off when told', async () => {
      guest.console.input.write('\n');
      expect(await guest.outcome).toEqual({ reason: 'shutdown', vcpu: expect.any(Number) });
    });
  });
});
