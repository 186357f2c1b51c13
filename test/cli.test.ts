/**
 * The `kvmkit` command as users of QEMU and of Node tools expect it: strict options with
 * suggestions, each command's own help, QEMU's size rule, a human `info`, quiet pipes.
 */
import { spawnSync } from 'node:child_process';
import { PassThrough, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { describeLoad } from '../src/bench/host.js';
import { closest, countFlag, listFlag, netFlag, parseCommand, sizeFlag, vsockFlag } from '../src/cli-args.js';
import { ConfigError } from '../src/errors.js';
import { keepConsole, reportSilence } from '../src/run-command.js';
import { describeKvm } from './kvm.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

function kvmkit(...args: string[]) {
  return spawnSync('node', [cli, ...args], { encoding: 'utf8', input: '', timeout: 60_000 });
}

describe('kvmkit options', () => {
  it('suggests the flag meant for a misspelt one, and exits 2', () => {
    const result = kvmkit('run', '--kernal', 'vmlinuz');
    expect(result.stderr).toBe(
      'kvmkit run: unknown option --kernal (did you mean --kernel?)\nSee "kvmkit run --help".\n',
    );
    expect(result.status).toBe(2);
    expect(kvmkit('rnu').stderr).toContain('unknown command "rnu" (did you mean run?)');
  });

  it("shows a command's own help for --help after it, and for help <command>", () => {
    for (const args of [
      ['run', '--help'],
      ['help', 'run'],
    ]) {
      const result = kvmkit(...args);
      expect(result.stdout).toMatch(/^Usage: kvmkit run \[KERNEL\] \[options\]/);
      expect(result.stdout).toContain('--standard-bzimage');
      expect(result.stdout).not.toContain('--milestone');
      expect(result.status).toBe(0);
    }
    expect(kvmkit('bench', 'boot', '-h').stdout).toContain('--milestone');
    expect(kvmkit('--help').stdout).toContain('a bare number is MiB');
  });

  it('refuses options a command does not take', () => {
    const result = kvmkit('demo', '--memory', '5');
    expect(result.stderr).toContain('kvmkit demo: unknown option --memory');
    expect(result.status).toBe(2);
    expect(kvmkit('info', 'extra').stderr).toContain('unexpected argument "extra"');
  });

  it('says what is wrong with a flag in flag words, not API words', () => {
    const result = kvmkit('run', 'vmlinuz', '--memory', 'lots');
    expect(result.stderr).toContain('kvmkit run: --memory: "lots" is not a size');
    expect(result.stderr).not.toContain('invalid config');
    expect(result.stderr).not.toContain('INVALID_CONFIG');
    expect(result.status).toBe(2);
  });

  it("reads every size flag by QEMU's rule: a bare number is MiB", () => {
    expect(sizeFlag('512', '--memory', 0)).toBe(512 * 2 ** 20);
    expect(sizeFlag('2G', '--memory', 0)).toBe(2 * 2 ** 30);
    expect(sizeFlag('64KiB', '--memory', 0)).toBe(64 * 2 ** 10);
    expect(sizeFlag(undefined, '--memory', 7)).toBe(7);
    expect(() => sizeFlag('5x', '--memory', 0)).toThrow(ConfigError);
  });

  it('parses strictly: values where needed, none on switches, suggestions for list items', () => {
    const spec = {
      name: 'x',
      summary: '',
      positionals: ['[KERNEL]'],
      options: { kernel: { type: 'string', help: '' }, fast: { type: 'boolean', help: '' } },
    } as const;
    expect(parseCommand(spec, ['k', '--fast']).values).toEqual({ fast: true });
    expect(() => parseCommand(spec, ['--kernel'])).toThrow('--kernel needs a value');
    expect(() => parseCommand(spec, ['--fast=yes'])).toThrow('--fast takes no value');
    expect(() => parseCommand(spec, ['a', 'b'])).toThrow('unexpected argument "b"');
    expect(() => listFlag('c,bultin', '--paths', ['c', 'builtin'])).toThrow('unknown "bultin" (did you mean builtin?)');
    expect(() => countFlag('0', '--cpus', 1)).toThrow('expected a whole number of at least 1, got "0"');
    expect(vsockFlag(undefined, '--vsock')).toEqual({});
    expect(vsockFlag('3', '--vsock')).toEqual({ vsock: { cid: 3 } });
    expect(vsockFlag('7,uds=/run/v.sock', '--vsock')).toEqual({ vsock: { cid: 7, uds: '/run/v.sock' } });
    expect(() => vsockFlag('2', '--vsock')).toThrow('with a CID of 3 or more, got "2"');
    expect(vsockFlag('3,vhost', '--vsock')).toEqual({ vsock: { cid: 3, vhost: true } });
    expect(() => vsockFlag('3,path=x', '--vsock')).toThrow('expected uds=PATH or vhost after the CID');
    expect(closest('kernal', ['kernel', 'initrd'])).toBe('kernel');
    expect(closest('zzzzzz', ['kernel', 'initrd'])).toBeUndefined();
  });

  it('reads --net as tap=IFNAME[,mac=MAC], and says --net and --virtio-console in the help', () => {
    expect(netFlag('tap=tap0')).toEqual({ tap: 'tap0' });
    expect(netFlag('tap=tap1,mac=02:00:00:00:00:01')).toEqual({ tap: 'tap1', mac: '02:00:00:00:00:01' });
    expect(netFlag('tap=tap2,vhost')).toEqual({ tap: 'tap2', vhost: true });
    for (const bad of ['tap0', 'tap=', 'user', 'tap=a,tap=b', 'tap=a,model=e1000', 'tap=a,vhost=1', 'vhost']) {
      expect(() => netFlag(bad), bad).toThrow(ConfigError);
    }
    const help = kvmkit('run', '--help').stdout;
    expect(help).toContain('--net tap=IFNAME');
    expect(help).toContain('repeat for more');
    expect(help).toContain('--virtio-console');
  });

  it('says the guest is still booting while its console is silent, and stops at its first byte', async () => {
    for (const isTTY of [false, true]) {
      const written: string[] = [];
      const status = Object.assign(
        new Writable({
          write(chunk: Buffer, _encoding, done) {
            written.push(chunk.toString());
            done();
          },
        }),
        { isTTY },
      );
      const output = new PassThrough();
      const stop = reportSilence(output, status, 20);
      await sleep(70);
      expect(written.length).toBeGreaterThanOrEqual(2);
      expect(written[0]).toMatch(
        isTTY ? /^\rkvmkit: \d+ s, no console output yet/ : /^kvmkit: \d+ s, no console output yet.*\n$/,
      );
      output.write('L');
      await sleep(10);
      const count = written.length;
      await sleep(60);
      expect(written.length).toBe(count);
      expect(written.at(-1)).toEqual(isTTY ? '\r\x1b[K' : expect.stringContaining('no console output yet'));
      stop();
    }
  });

  it('keeps the console on ttyS0 unless the command line sets one', () => {
    expect(keepConsole('root=/dev/vda')).toBe('root=/dev/vda console=ttyS0');
    expect(keepConsole('console=hvc0')).toBe('console=hvc0');
  });
});

describeKvm('kvmkit info and pipes', () => {
  it('describes the host for a person by default, and as JSON with --json', () => {
    const human = kvmkit('info');
    expect(human.stdout).toMatch(/^kvmkit info: \/dev\/kvm is usable \(KVM API 12\)/);
    expect(human.stdout).toMatch(/KVM: +(hardware virtualization|software-assisted, no VT-x\/AMD-V)/);
    expect(human.stdout).toMatch(/limits: +\d+ vCPUs per VM/);
    expect(human.stdout).toMatch(/capabilities: +(all \d+ that kvmkit uses|\d+ of the \d+ kvmkit uses; missing)/);
    expect(human.stdout).toMatch(/QEMU: +(\/\S+qemu-system-x86_64|not found)/);
    const json = JSON.parse(kvmkit('info', '--json').stdout) as { kvm: { apiVersion: number }; virtualization: string };
    expect(json.kvm.apiVersion).toBe(12);
    expect(['hardware', 'software-assisted']).toContain(json.virtualization);
  });

  it('ends quietly when the reader closes the pipe', () => {
    const result = spawnSync('bash', ['-c', `node ${cli} demo | head -1; echo "status \${PIPESTATUS[0]}"`], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(result.stdout).toMatch(/^kvmkit demo: .*\nstatus 0\n$/);
    expect(result.stderr).toBe('');
  });
});

describe('the bench host note', () => {
  it('calls a host busy when other processes used more than a quarter of a CPU, naming the busiest', () => {
    const busy = describeLoad({ loadAverage: 3.2, otherCpus: 1.5, busiest: ['cargo 98%', 'rustc 50%'] }, 2);
    expect(busy).toBe(
      'host busy: load average 3.2 on 2 CPUs; other processes used 1.5 CPUs (cargo 98%, rustc 50%): ' +
        'figures read slower, and targets miss, more than on an idle host',
    );
    expect(describeLoad({ loadAverage: 0.4, otherCpus: 0.1, busiest: [] }, 2)).toBe(
      'host idle: load average 0.4 on 2 CPUs; other processes used 0.1 CPUs',
    );
  });
});
