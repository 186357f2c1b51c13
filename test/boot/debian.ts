/**
 * Debian's kernel and busybox initramfs (scripts/fixtures.sh) and booting them through
 * kvmkit while watching the console: shared by the boot stage and the hardware tests.
 */
import { fileURLToPath } from 'node:url';
import { createLinuxMachine, type LoadedKernel, type Outcome } from '../../src/index.js';

export const fixture = (name: string) => fileURLToPath(new URL(`../../fixtures/cache/${name}`, import.meta.url));
export const vmlinux = fixture('vmlinux');
export const vmlinuz = fixture('vmlinuz');
export const initramfs = fixture('initramfs');

/** Runs until the console matches `until`, the run ends, or `seconds` pass; returns what it printed. */
export async function bootUntil(
  options: Parameters<typeof createLinuxMachine>[0],
  until: RegExp,
  seconds: number,
): Promise<{ log: string; outcome: Outcome | undefined; loaded: LoadedKernel }> {
  const { vm, console, loaded } = createLinuxMachine(options);
  let log = '';
  let outcome: Outcome | undefined;
  try {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, seconds * 1000);
      console.output.on('data', (chunk: Buffer) => {
        log += chunk.toString('latin1');
        if (until.test(log)) {
          clearTimeout(timer);
          resolve();
        }
      });
      void vm.run().then((o) => {
        outcome = o;
        clearTimeout(timer);
        resolve();
      });
    });
  } finally {
    await vm.close();
  }
  return { log, outcome, loaded };
}
