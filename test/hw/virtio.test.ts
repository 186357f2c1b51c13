/**
 * Debian's kernel with kvmkit's virtio devices, on hardware virtualization: the test
 * initramfs (scripts/fixtures.sh) loads Debian's virtio modules and, with
 * `kvmkit.test=virtio`, runs test/hw/virtio-guest.sh, which exercises each device it finds
 * and prints a `KVMKIT-<STEP>` line per step. The host side checks those lines and what the
 * guest left behind (a disk written, a console shell's output, pings answered).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSwitch } from '../../src/index.js';
import { initramfs, marker, type RunningLinux, startLinux, TestLog, vmlinuz } from '../boot/debian.js';
import { describeHw } from './hardware.js';

const cmdline = 'console=ttyS0 panic=-1 kvmkit.test=virtio';

describeHw("Debian's virtio drivers on kvmkit's devices", () => {
  describe('one guest with every device kvmkit has', () => {
    let dir = '';
    let scratch = '';
    const token = `kvmkit-${Math.random().toString(36).slice(2)}`;
    const vsockPort = 5000;
    let guest: RunningLinux;
    let log = '';

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'kvmkit-virtio-'));
      const data = join(dir, 'data.img');
      scratch = join(dir, 'scratch.img');
      // An ext4 image made from a directory, without mounting (e2fsprogs' mke2fs -d).
      mkdirSync(join(dir, 'files'));
      writeFileSync(join(dir, 'files', 'hello.txt'), `${token}\n`);
      execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', join(dir, 'files'), data, '16M'], {
        env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` },
      });
      writeFileSync(scratch, Buffer.alloc(1 << 20));
      // The guest waits for a line on its serial console before it powers off (kvmkit.wait).
      guest = startLinux(
        {
          kernel: vmlinuz,
          initrd: initramfs,
          cmdline: `${cmdline} kvmkit.wait kvmkit.vsock=${vsockPort}`,
          rng: true,
          disks: [{ path: data, readOnly: true }, { path: scratch }],
          virtioConsole: true,
          vsock: { cid: 3 },
        },
        'virtio: one guest with every device',
      );
      // The guest sends a line (test/hw/vsock-cat.S); the answer goes back once, when it is whole
      // (a chunk after that must not end the socket again: a write after end is an 'error').
      guest.vsock?.listen(vsockPort, (socket) => {
        let line = '';
        socket.on('data', (chunk: Buffer) => {
          line += chunk.toString('latin1');
          if (line.includes('\n') && !socket.writableEnded) {
            socket.end(`pong: ${line.trim()}\n`);
          }
        });
      });
      await guest.waitFor(/^KVMKIT-VIRTIO-DONE/m, 300);
      log = guest.log();
    }, 330_000);

    afterAll(async () => {
      await guest?.close();
      if (dir) {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('loads the virtio modules in order and binds a driver to each device', () => {
      expect(log).not.toMatch(/^KVMKIT-\S+ FAIL/m);
      expect(marker(log, 'MODULES')).toMatch(/^ok virtio_ring virtio virtio_mmio virtio_blk /);
      const devices = marker(log, 'VIRTIO-DEVICES')?.split(' ').sort();
      const expected = [
        '0x0004=virtio_rng',
        '0x0002=virtio_blk',
        '0x0002=virtio_blk',
        '0x0003=virtio_console',
        '0x0013=vmw_vsock_virtio_transport',
      ].sort();
      expect(devices).toEqual(expected);
    });

    it('reads /dev/hwrng from virtio-rng', () => {
      const [, source, random] = marker(log, 'HWRNG')?.match(/^ok (\S+) ([0-9a-f]*)$/) ?? [];
      expect(source).toBe('virtio_rng.0');
      expect(random).toMatch(/^[0-9a-f]{64}$/);
      expect(random).not.toMatch(/^0+$/);
    });

    it('mounts the ext4 disk the test made and reads its file', () => {
      expect(marker(log, 'DISKS')).toBe('ok vda vdb');
      expect(marker(log, 'DISK-READ')).toBe(`ok vda ${token}`);
      expect(marker(log, 'DISK-WRITE')).toBe('ok vdb');
    });

    it("carries a shell's output on hvc0", async () => {
      expect(marker(log, 'HVC0')).toBe('ok a shell reads /dev/hvc0');
      const hvc0 = guest.virtioConsole;
      if (hvc0 === undefined) {
        throw new Error('createLinuxMachine({ virtioConsole: true }) returned no virtioConsole');
      }
      // An interactive busybox shell (hvc0 is a terminal): a banner, prompts, CR LF line ends.
      // What it prints is kept beside the console's log, with when it last came.
      const kept = new TestLog('hvc0');
      let printed = '';
      let last = 0;
      hvc0.output.on('data', (chunk: Buffer) => {
        kept.write(chunk);
        printed += chunk.toString('latin1').replaceAll('\r', '');
        last = performance.now();
      });
      // 2000 lines (8.9 KB), through cat in big writes, then a line the shell computes. In the
      // nested test machine under load hvc0 carried only ~0.3 KB/s line by line and ~0.7 KB/s
      // through cat (measured 2026-11-25): the 16550 was faster there.
      const start = performance.now();
      hvc0.input.write('seq 1 2000 | cat; echo "KVMKIT-HVC0-$((6 * 7))"\n');
      while (!printed.includes('KVMKIT-HVC0-42') && performance.now() - start < 120_000) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        kept.note(`${printed.length} bytes so far`);
      }
      kept.note(`${printed.length} bytes, the last ${((last - start) / 1000).toFixed(1)} s after the command`);
      await kept.end();
      expect(printed).toContain('\n2000\n');
      expect(printed).toContain('KVMKIT-HVC0-42');
    });

    it('round-trips a line over vsock to a TypeScript listener', () => {
      expect(marker(log, 'VSOCK')).toBe(`ok ${vsockPort} answered: pong: hello from the guest`);
    });

    it('powers off when told; the disk the guest wrote holds its line', async () => {
      guest.console.input.write('\n');
      expect(await guest.outcome).toEqual({ reason: 'shutdown', vcpu: expect.any(Number) });
      const written = readFileSync(scratch)
        .subarray(4096, 4096 + 40)
        .toString('latin1');
      expect(written).toMatch(/^written by the guest to vdb\n\0/);
    });
  });

  it('two guests ping each other through a TypeScript switch', async () => {
    const lan = createSwitch();
    const guests: RunningLinux[] = [];
    const address = (n: number) => `10.0.2.${15 + n}`;
    try {
      for (const n of [0, 1]) {
        guests.push(
          startLinux(
            {
              kernel: vmlinuz,
              initrd: initramfs,
              cmdline: `${cmdline} kvmkit.wait kvmkit.ip=${address(n)}/24 kvmkit.ping=${address(1 - n)}`,
              net: [{ switch: lan, mac: `02:00:00:00:00:0${n + 1}` }],
            },
            `guest ${n}`,
          ),
        );
      }
      const pinged = await Promise.all(guests.map((g) => g.waitFor(/^KVMKIT-PING (.*?)\r?\n/m, 300)));
      expect(pinged.map((m) => m[1])).toEqual([
        expect.stringMatching(`^ok ${address(1)} `),
        expect.stringMatching(`^ok ${address(0)} `),
      ]);
      for (const g of guests) {
        g.console.input.write('\n');
      }
      expect(await Promise.all(guests.map((g) => g.outcome))).toEqual([
        { reason: 'shutdown', vcpu: expect.any(Number) },
        { reason: 'shutdown', vcpu: expect.any(Number) },
      ]);
    } finally {
      await Promise.all(guests.map((g) => g.close()));
    }
  });
});
