/**
 * `kvmkit run`: boots a Linux kernel with its console on this terminal.
 * @module
 */
import { basename } from 'node:path';
import type { Readable } from 'node:stream';
import { ConfigError } from './errors.js';
import { hardwareVirtualization } from './hardware.js';
import { kvmInfo } from './kvm.js';
import { createLinuxMachine, DEFAULT_CMDLINE, type LinuxDevices, type LinuxMachine } from './linux.js';
import type { Outcome } from './outcome.js';
import { formatSize } from './size.js';

/** What `kvmkit run` boots. */
export interface RunCommandOptions {
  /** The kernel: an ELF vmlinux or a bzImage. */
  readonly kernel: string;
  /** An initrd. */
  readonly initrd?: string;
  /**
   * The command line (default {@link DEFAULT_CMDLINE}). Without a `console=` of its own,
   * `console=ttyS0` is added, so the console stays on this terminal.
   */
  readonly append?: string;
  /** Guest RAM in bytes (default 512 MiB). */
  readonly memory?: number;
  /** vCPUs (default 1). */
  readonly cpus?: number;
  /** How a bzImage is entered (default: decompressed on the host). */
  readonly bzImage?: 'decompress' | 'standard';
  /** The virtio devices (none by default). */
  readonly devices?: LinuxDevices;
  /** Where the banner and the progress while the guest is silent go (default stderr). */
  readonly status?: NodeJS.WritableStream & { isTTY?: boolean };
}

const CTRL_A = 0x01;
/** Linux describes at most this many CPUs: its MADT and MP table carry 8-bit APIC IDs. */
const LINUX_MAX_VCPUS = 255;
/** How often the progress line speaks while the guest has printed nothing (ms). */
const SILENCE_TICK_MS = 5000;

/** Whether an outcome counts as a clean end for the exit status. */
export function cleanEnd(outcome: Outcome): boolean {
  return ['shutdown', 'halted', 'reset', 'stopped'].includes(outcome.reason);
}

/** `append` with `console=ttyS0` added unless it names a console itself. */
export function keepConsole(append: string): string {
  return /(^|\s)console=/.test(append) ? append : `${append} console=ttyS0`.trim();
}

/** One line saying what boots, on what. */
function banner(options: RunCommandOptions, linux: LinuxMachine, memory: number): string {
  const { loaded, vm } = linux;
  const how =
    loaded.decompressed === undefined
      ? loaded.protocol
      : `bzImage, ${loaded.decompressed.compression} payload decompressed on the host${loaded.decompressed.fromCache ? ', from the cache' : ''}`;
  const cpus = `${vm.vcpus.length} vCPU${vm.vcpus.length === 1 ? '' : 's'}`;
  return `kvmkit: booting ${basename(options.kernel)} (${how}) with ${formatSize(memory)} of RAM and ${cpus}; Ctrl-A x quits\n`;
}

/**
 * Tells the user, every `tickMs`, that the guest is still booting while `output` has given
 * nothing (one line rewritten on a terminal); stops at its first byte, or when the returned
 * function is called.
 */
export function reportSilence(
  output: Readable,
  status: NonNullable<RunCommandOptions['status']>,
  tickMs = SILENCE_TICK_MS,
): () => void {
  const started = Date.now();
  const slow = hardwareVirtualization() ? '' : ' (software-assisted KVM: a kernel takes minutes to print)';
  let shown = false;
  const timer = setInterval(() => {
    const line = `kvmkit: ${Math.round((Date.now() - started) / 1000)} s, no console output yet${slow}`;
    status.write(status.isTTY === true ? `\r${line}` : `${line}\n`);
    shown = true;
  }, tickMs);
  const stop = () => {
    clearInterval(timer);
    if (shown && status.isTTY === true) {
      status.write('\r\x1b[K');
    }
    shown = false;
  };
  output.once('data', stop);
  return stop;
}

/**
 * Boots `options.kernel` with the console on stdin/stdout (raw mode on a terminal; Ctrl-A x
 * quits, Ctrl-A Ctrl-A sends Ctrl-A), after a one-line banner and with a progress line
 * while the guest is silent. With a virtio console its output is shown too and the
 * terminal types into it instead of COM1. Resolves with the outcome.
 */
export async function runCommand(options: RunCommandOptions): Promise<Outcome> {
  const status = options.status ?? process.stderr;
  const memory = options.memory ?? 512 * 2 ** 20;
  const cpus = options.cpus ?? 1;
  if (cpus > LINUX_MAX_VCPUS) {
    throw new ConfigError(
      'vcpus',
      `${cpus} is more than Linux can be told about (at most ${LINUX_MAX_VCPUS}: 8-bit APIC IDs; this host's KVM allows ${kvmInfo().maxVcpus})`,
    );
  }
  const linux = createLinuxMachine({
    kernel: options.kernel,
    ...(options.initrd === undefined ? {} : { initrd: options.initrd }),
    cmdline: keepConsole(options.append ?? DEFAULT_CMDLINE),
    memory,
    vcpus: cpus,
    ...(options.bzImage === undefined ? {} : { bzImage: options.bzImage }),
    ...options.devices,
  });
  const { vm, console, virtioConsole } = linux;
  status.write(banner(options, linux, memory));
  const stopProgress = reportSilence(console.output, status);
  console.output.pipe(process.stdout, { end: false });
  virtioConsole?.output.pipe(process.stdout, { end: false });
  const terminal = virtioConsole ?? console;
  const stdin = process.stdin;
  const raw = stdin.isTTY;
  if (raw) {
    stdin.setRawMode(true);
  }
  let afterCtrlA = false;
  const onInput = (chunk: Buffer) => {
    for (const byte of chunk) {
      if (afterCtrlA) {
        afterCtrlA = false;
        if (byte === 0x78 /* x */) {
          vm.stop();
          return;
        }
        if (byte !== CTRL_A) {
          continue;
        }
      } else if (byte === CTRL_A) {
        afterCtrlA = true;
        continue;
      }
      terminal.input.write(Buffer.of(byte));
    }
  };
  stdin.on('data', onInput);
  try {
    return await vm.run();
  } finally {
    stopProgress();
    stdin.off('data', onInput);
    if (raw) {
      stdin.setRawMode(false);
    }
    stdin.pause();
    await vm.close();
  }
}
