/**
 * What the host side of one exit executes, path by path: the instructions and the distinct
 * 4 KiB code pages from one `KVM_RUN` to the next on the thread that runs the vCPU, counted
 * by single-stepping it (`benches/footprint.c`, ptrace). Unlike a clock, the counts do not
 * move with the host's load, and pages are what an exit costs where every exit flushes the
 * TLB (KVM nested under an emulator, as the hardware test machine runs: ~250 ns a code page
 * there). Paths answered on the vCPU's own thread only: the C loop, the Rust built-in
 * device, and an inline TypeScript handler.
 * @module
 */
import { execFile as execFileCb } from 'node:child_process';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { guestPath } from '../guests.js';
import { buildBenchTool, buildCBaseline } from './anchors.js';
import { EXITS, type ExitName, exitCode, reachesUserspace } from './exits.js';

const execFile = promisify(execFileCb);

/** The paths whose exits are answered on the vCPU's thread, so one thread's steps cover them. */
export type FootprintPath = 'c' | 'builtin' | 'inline';

/** Every {@link FootprintPath}, in table order. */
export const FOOTPRINT_PATHS: readonly FootprintPath[] = ['c', 'builtin', 'inline'];

/** The exit kinds that reach the host's userspace, the ones a footprint can be counted for. */
export const FOOTPRINT_EXITS: readonly ExitName[] = EXITS.filter(reachesUserspace);

/** The tracer's source, shipped in the package. */
const TRACER_SOURCE = fileURLToPath(new URL('../../benches/footprint.c', import.meta.url));

/** The module the traced Node process runs its path from. */
const PATHS_MODULE = new URL('./kvmkit-paths.js', import.meta.url).href;

/** Exits a traced run is given: more than it makes before it is killed. */
const TARGET_EXITS = 10_000_000;

/** The longest one path and kind may take (its traced process dies with the tracer). */
const TRACE_TIMEOUT_MS = 300_000;

/** How long a traced process runs before its steps are counted, so JIT code is warm. */
const SETTLE_MS = 2000;

/** What the host ran for one exit of `exit` on `path` (the median of the windows stepped). */
export interface Footprint {
  /** The path that answered the exits. */
  readonly path: FootprintPath;
  /** Their kind. */
  readonly exit: ExitName;
  /** Instructions from one `KVM_RUN` to the next. */
  readonly instructions: number;
  /** Distinct 4 KiB code pages they came from. */
  readonly codePages: number;
  /** Those pages by the file mapped there (`[anon]`: JIT code; `[vdso]`: the clock). */
  readonly pagesByObject: Readonly<Record<string, number>>;
  /** Windows stepped (one exit each). */
  readonly windows: number;
}

/** A path that could not be stepped, and why. */
export interface UnavailableFootprint {
  /** The path. */
  readonly path: FootprintPath;
  /** Why it was not stepped: the tracer's or the compiler's message. */
  readonly reason: string;
}

/** What {@link measureFootprints} found. */
export interface FootprintReport {
  /** One per path and exit kind stepped, by exit kind, then path. */
  readonly footprints: readonly Footprint[];
  /** The paths that could not be stepped. */
  readonly unavailable: readonly UnavailableFootprint[];
}

/** Options of {@link measureFootprints}. */
export interface FootprintOptions {
  /** The paths to step (default {@link FOOTPRINT_PATHS}). */
  readonly paths?: readonly FootprintPath[];
  /** The exit kinds (default {@link FOOTPRINT_EXITS}). */
  readonly exits?: readonly ExitName[];
  /** Exits stepped per path and kind (default 9). */
  readonly windows?: number;
  /** Called before each path and kind is stepped, and once all are (`done` = `total`). */
  readonly progress?: (done: number, total: number, label: string) => void;
}

/** One window as the tracer prints it. */
interface Window {
  readonly instructions: number;
  readonly pages: Record<string, number>;
}

/**
 * Steps `windows` exits of each path and exit kind and reports the median one. Needs
 * `/dev/kvm`, a C compiler and permission to ptrace a child process (given to root, and to
 * anyone under Yama's `ptrace_scope` 0 or 1).
 *
 * @example
 * ```ts
 * import { measureFootprints, formatFootprintTable } from 'kvmkit/bench';
 * const report = await measureFootprints({ exits: ['pio-out'] });
 * process.stdout.write(formatFootprintTable(report));
 * ```
 */
export async function measureFootprints(options: FootprintOptions = {}): Promise<FootprintReport> {
  const exits = (options.exits ?? FOOTPRINT_EXITS).filter(reachesUserspace);
  const windows = options.windows ?? 9;
  const paths = options.paths ?? FOOTPRINT_PATHS;
  const tracer = await buildBenchTool(TRACER_SOURCE);
  const loop = paths.includes('c') ? await buildCBaseline() : { path: '' };
  const loopPath = 'path' in loop ? loop.path : '';
  const footprints: Footprint[] = [];
  const unavailable = new Map<FootprintPath, string>();
  for (const path of paths) {
    if ('unavailable' in tracer) {
      unavailable.set(path, tracer.unavailable);
    } else if (path === 'c' && 'unavailable' in loop) {
      unavailable.set(path, loop.unavailable);
    }
  }
  const total = exits.length * paths.filter((path) => !unavailable.has(path)).length;
  let done = 0;
  for (const exit of exits) {
    for (const path of paths) {
      if ('unavailable' in tracer || unavailable.has(path)) {
        continue;
      }
      options.progress?.(done++, total, `${path} ${exit}`);
      const target = targetOf(path, exit, loopPath);
      const args = [String(windows), String(SETTLE_MS), target.thread, ...target.command];
      try {
        const { stdout } = await execFile(tracer.path, args, {
          maxBuffer: 1 << 20,
          timeout: TRACE_TIMEOUT_MS,
          killSignal: 'SIGKILL',
        });
        const stepped = (JSON.parse(stdout) as { windows: Window[] }).windows;
        footprints.push(summarize(path, exit, stepped, basename(loopPath)));
      } catch (error) {
        const stderr = (error as { stderr?: string }).stderr?.trim();
        unavailable.set(path, stderr || (error as Error).message);
      }
    }
  }
  options.progress?.(total, total, 'done');
  return { footprints, unavailable: [...unavailable].map(([path, reason]) => ({ path, reason })) };
}

/** The process that runs `exit` on `path`, and the name of its thread that runs the vCPU. */
function targetOf(path: FootprintPath, exit: ExitName, loop: string): { command: string[]; thread: string } {
  const count = String(TARGET_EXITS);
  if (path === 'c') {
    // A thread's name is its program's, cut to 15 characters.
    return { command: [loop, guestPath('bench'), String(exitCode(exit)), count], thread: basename(loop).slice(0, 15) };
  }
  const run = `import(${JSON.stringify(PATHS_MODULE)}).then((m) => m.runKvmkit(process.argv[1], process.argv[2], Number(process.argv[3])))`;
  return {
    command: [process.execPath, '-e', run, path, exit, count],
    thread: path === 'inline' ? basename(process.execPath).slice(0, 15) : 'kvmkit-vcpu0',
  };
}

/** The window with the median instruction count; the C loop's binary (`loop`) is named `kvm_loop`. */
function summarize(path: FootprintPath, exit: ExitName, windows: readonly Window[], loop: string): Footprint {
  if (windows.length === 0) {
    throw new Error('the tracer stepped no exit');
  }
  const sorted = [...windows].sort((a, b) => a.instructions - b.instructions);
  const median = sorted[Math.floor((sorted.length - 1) / 2)] as Window;
  const pages = Object.entries(median.pages).map(([name, n]) => [name === loop ? 'kvm_loop' : name, n] as const);
  return {
    path,
    exit,
    instructions: median.instructions,
    codePages: pages.reduce((sum, [, n]) => sum + n, 0),
    pagesByObject: Object.fromEntries(pages),
    windows: windows.length,
  };
}

/** `report` as a table, one line per path and exit kind. */
export function formatFootprintTable(report: FootprintReport): string {
  const lines = ['exit        path      instructions  code pages  by object'];
  let last: ExitName | undefined;
  for (const f of report.footprints) {
    const objects = Object.entries(f.pagesByObject)
      .sort((a, b) => b[1] - a[1])
      .map(([name, n]) => `${name} ${n}`)
      .join(', ');
    const exit = f.exit === last ? '' : f.exit;
    last = f.exit;
    lines.push(
      `${exit.padEnd(12)}${f.path.padEnd(10)}${String(f.instructions).padStart(12)}${String(f.codePages).padStart(12)}  ${objects}`,
    );
  }
  for (const u of report.unavailable) {
    lines.push(`${u.path}: not stepped: ${u.reason}`);
  }
  lines.push(
    '',
    'instructions and distinct 4 KiB code pages the vCPU thread runs from one KVM_RUN to the next',
    '(the median of the exits stepped), counted by single-stepping it after a warm-up.',
  );
  return `${lines.join('\n')}\n`;
}
