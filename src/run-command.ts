/**
 * `kvmkit run`: boots a Linux kernel with its console on this terminal.
 * @module
 */
import { createLinuxMachine, DEFAULT_CMDLINE } from './linux.js';
import type { Outcome } from './outcome.js';

/** What `kvmkit run` boots. */
export interface RunCommandOptions {
  /** The kernel: an ELF vmlinux or a bzImage. */
  readonly kernel: string;
  /** An initrd. */
  readonly initrd?: string;
  /** The command line. */
  readonly append?: string;
  /** Guest RAM. */
  readonly memory?: string;
  /** vCPUs. */
  readonly cpus?: number;
  /** How a bzImage is entered (default: decompressed on the host). */
  readonly bzImage?: 'decompress' | 'standard';
}

const CTRL_A = 0x01;

/** Whether an outcome counts as a clean end for the exit status. */
export function cleanEnd(outcome: Outcome): boolean {
  return ['shutdown', 'halted', 'reset', 'stopped'].includes(outcome.reason);
}

/**
 * Boots `options.kernel` with the console on stdin/stdout (raw mode on a terminal; Ctrl-A x
 * quits, Ctrl-A Ctrl-A sends Ctrl-A). Resolves with the outcome.
 */
export async function runCommand(options: RunCommandOptions): Promise<Outcome> {
  const { vm, console } = createLinuxMachine({
    kernel: options.kernel,
    ...(options.initrd === undefined ? {} : { initrd: options.initrd }),
    cmdline: options.append ?? DEFAULT_CMDLINE,
    ...(options.memory === undefined ? {} : { memory: options.memory }),
    ...(options.cpus === undefined ? {} : { vcpus: options.cpus }),
    ...(options.bzImage === undefined ? {} : { bzImage: options.bzImage }),
  });
  console.output.pipe(process.stdout, { end: false });
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
      console.input.write(Buffer.of(byte));
    }
  };
  stdin.on('data', onInput);
  try {
    return await vm.run();
  } finally {
    stdin.off('data', onInput);
    if (raw) {
      stdin.setRawMode(false);
    }
    stdin.pause();
    await vm.close();
  }
}
