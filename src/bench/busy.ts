/**
 * A busy host in miniature: a child process that keeps one CPU busy while the benchmark
 * runs, as another service on a Node server would.
 * @module
 */
import { spawn } from 'node:child_process';

/** A running CPU hog; `stop()` ends it. */
export interface CpuHog {
  /** Ends the busy process and waits for it to exit. */
  stop(): Promise<void>;
}

/** Starts a process that spins on one CPU until stopped (or until this process exits). */
export async function holdOneCpu(): Promise<CpuHog> {
  const child = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  // Let it reach its loop before anything is measured.
  await new Promise((resolve) => setTimeout(resolve, 200));
  return {
    stop: async () => {
      process.removeListener('exit', kill);
      kill();
      await exited;
    },
  };
}
