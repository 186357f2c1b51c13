/**
 * Debian's kernel and busybox initramfs (scripts/fixtures.sh) and booting them through
 * kvmkit while watching the console: shared by the boot stage and the hardware tests.
 *
 * With `KVMKIT_TEST_LOG_DIR` set, every guest's console is also written, as it arrives, to
 * `<dir>/<test name>.log` with the harness's own steps (run ended, closing, closed) marked
 * in it and timed, so a run that hangs or fails leaves what each guest printed last.
 */
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { createLinuxMachine, type LinuxMachine, type Outcome } from '../../src/index.js';

export const fixture = (name: string) => fileURLToPath(new URL(`../../fixtures/cache/${name}`, import.meta.url));
export const vmlinux = fixture('vmlinux');
export const vmlinuz = fixture('vmlinuz');
export const initramfs = fixture('initramfs');

/**
 * The rest of the line `KVMKIT-<step> …` that test/hw/virtio-guest.sh printed on the guest's
 * console (once whole), or undefined if it did not print the step.
 */
export function marker(log: string, step: string): string | undefined {
  return log.match(new RegExp(`^KVMKIT-${step} (.*?)\\r?\\n`, 'm'))?.[1];
}

/** A test's console log file in `KVMKIT_TEST_LOG_DIR`, if set: named after the running test and `label`. */
export class TestLog {
  readonly #file: WriteStream | undefined;
  readonly #start = performance.now();

  constructor(label = '') {
    const dir = process.env.KVMKIT_TEST_LOG_DIR;
    if (dir) {
      // In a hook there is no test: the label names the log.
      const test = expect.getState().currentTestName;
      const name = ([test, label].filter(Boolean).join(' ') || 'outside a test')
        .replace(/[^\w.,+-]+/g, '_')
        .slice(0, 180);
      mkdirSync(dir, { recursive: true });
      this.#file = createWriteStream(join(dir, `${name}.log`));
    }
  }

  /** Appends what the guest printed. */
  write(chunk: Buffer | string): void {
    // A guest goes on printing after its test stops keeping (a shell's prompt after the
    // awaited line): a write after end() would be the stream's unhandled 'error'.
    if (this.#file?.writableEnded === false) {
      this.#file.write(chunk);
    }
  }

  /** Marks a step of the harness in the log, with the seconds since it opened. */
  note(step: string): void {
    this.write(`\n[test +${((performance.now() - this.#start) / 1000).toFixed(1)} s] ${step}\n`);
  }

  /** Closes the file, resolving once what was kept is in it; what comes after is not kept. */
  end(): Promise<void> {
    return new Promise((resolve) => {
      if (this.#file === undefined || this.#file.writableEnded) {
        resolve();
      } else {
        this.#file.end(resolve);
      }
    });
  }
}

/** A Linux guest running, its console collected (and kept: see {@link TestLog}). */
export interface RunningLinux extends LinuxMachine {
  /** What the console printed so far. */
  log(): string;
  /** Resolves with the match once the console matches `pattern`; rejects if the run ends or `seconds` pass first. */
  waitFor(pattern: RegExp, seconds: number): Promise<RegExpMatchArray>;
  /** The run's outcome, when it ends. */
  readonly outcome: Promise<Outcome>;
  /** Closes the machine (stopping it if it still runs); notes each step in the kept log. */
  close(): Promise<void>;
}

/** Creates a Linux machine and runs it, collecting its console. `label` tells two guests of one test apart in the logs. */
export function startLinux(options: Parameters<typeof createLinuxMachine>[0], label = ''): RunningLinux {
  const machine = createLinuxMachine(options);
  const kept = new TestLog(label);
  let log = '';
  let ended: Outcome | undefined;
  const watchers = new Set<() => void>();
  machine.console.output.on('data', (chunk: Buffer) => {
    log += chunk.toString('latin1');
    kept.write(chunk);
    for (const watch of watchers) {
      watch();
    }
  });
  const outcome = machine.vm.run().then((o) => {
    ended = o;
    kept.note(`run ended: ${JSON.stringify(o)}`);
    for (const watch of watchers) {
      watch();
    }
    return o;
  });
  return {
    ...machine,
    log: () => log,
    outcome,
    waitFor(pattern, seconds) {
      return new Promise((resolve, reject) => {
        const done = (settle: () => void) => {
          clearTimeout(timer);
          watchers.delete(watch);
          settle();
        };
        const watch = () => {
          const match = log.match(pattern);
          if (match) {
            done(() => resolve(match));
          } else if (ended) {
            done(() =>
              reject(new Error(`the run ended (${JSON.stringify(ended)}) before the console showed ${pattern}`)),
            );
          }
        };
        const timer = setTimeout(() => {
          kept.note(`no ${pattern} after ${seconds} s`);
          done(() => reject(new Error(`the console did not show ${pattern} within ${seconds} s`)));
        }, seconds * 1000);
        watchers.add(watch);
        watch();
      });
    },
    async close() {
      kept.note('closing the machine');
      try {
        await machine.vm.close();
        kept.note('closed');
      } finally {
        await kept.end();
      }
    },
  };
}

/** Runs until the console matches `until`, the run ends, or `seconds` pass; returns what it printed. */
export async function bootUntil(
  options: Parameters<typeof createLinuxMachine>[0],
  until: RegExp,
  seconds: number,
): Promise<Pick<LinuxMachine, 'loaded'> & { log: string; outcome: Outcome | undefined }> {
  const guest = startLinux(options);
  let outcome: Outcome | undefined;
  void guest.outcome.then((o) => {
    outcome = o;
  });
  try {
    await guest.waitFor(until, seconds).catch(() => undefined);
    // The run's end, if it came with the console's last bytes, is in `outcome` after this turn.
    await Promise.race([guest.outcome, new Promise((resolve) => setImmediate(resolve))]);
  } finally {
    await guest.close();
  }
  return { log: guest.log(), outcome, loaded: guest.loaded };
}
