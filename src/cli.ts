#!/usr/bin/env node
/**
 * The `kvmkit` command.
 * @module
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { benchBoot, formatBootTable } from './bench/boot.js';
import { EXITS } from './bench/exits.js';
import { formatTable, toHtml, toJson } from './bench/report.js';
import { PATHS, runBench } from './bench/run.js';
import { describeOutcome, runDemo } from './demo.js';
import { ConfigError, KvmkitError } from './errors.js';
import { kvmInfo } from './kvm.js';
import { DEFAULT_CMDLINE } from './linux.js';
import { cleanEnd, runCommand } from './run-command.js';

const HELP = `Usage: kvmkit <command> [options]

Commands:
  demo        Boot the bundled demo guest and show what it did
  run         Boot a Linux kernel with its console on this terminal (Ctrl-A x quits)
  bench       Measure exit-handling latency: kvmkit's paths against a C KVM loop and QEMU
  bench boot  Measure a Linux kernel's boot time to a console milestone, kvmkit against QEMU
  info        Check /dev/kvm and print the host's KVM limits
  help        Show this help

Options:
  -h, --help     Show this help
  -v, --version  Print the version

run options:
  --kernel FILE      the kernel: an ELF vmlinux or a bzImage (required)
  --initrd FILE      an initrd or initramfs
  --append TEXT      the kernel command line (default: console on ttyS0)
  --memory SIZE      guest RAM (default 512M)
  --cpus N           vCPUs (default 1)
  --standard-bzimage enter a bzImage through its own decompressor (default: decompress
                     it on the host, cached in $KVMKIT_CACHE_DIR or ~/.cache/kvmkit)
  Exits 0 when the guest powers off, resets or is quit; 1 with the reason otherwise.

bench options:
  --count N          exits per run (default 20000)
  --reps N           interleaved repetitions (default 5)
  --paths LIST       comma-separated: c, builtin, inline, async, posted, qemu (default all)
  --exits LIST       comma-separated: pio-out, pio-in, mmio-write, mmio-read, cpuid (default all)
  --no-lifecycle     skip start-up time and idle-VM memory
  --busy             also run the suite with one CPU held by a busy process (started and
                     stopped by the bench), side by side with the quiet run
  --json FILE        also write the results as JSON
  --html FILE        also write a page with the latency distributions

bench boot options:
  --kernel FILE      the kernel, given to both (required); --initrd, --append, --memory
                     (in MiB, default 512) and --cpus as for run
  --milestone REGEX  the console line that ends a boot (default: "Memory: .* available")
  --runs N           boots of each, alternating (default 3)
  --timeout SECONDS  a boot that takes longer counts as not reaching it (default 600)
  --no-qemu          boot with kvmkit only
  --json FILE        also write the results as JSON
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
      count: { type: 'string' },
      reps: { type: 'string' },
      paths: { type: 'string' },
      exits: { type: 'string' },
      'no-lifecycle': { type: 'boolean' },
      busy: { type: 'boolean' },
      json: { type: 'string' },
      html: { type: 'string' },
      kernel: { type: 'string' },
      initrd: { type: 'string' },
      append: { type: 'string' },
      memory: { type: 'string' },
      cpus: { type: 'string' },
      'standard-bzimage': { type: 'boolean' },
      milestone: { type: 'string' },
      runs: { type: 'string' },
      timeout: { type: 'string' },
      'no-qemu': { type: 'boolean' },
    },
  });
  if (values.version) {
    console.log(version());
    return 0;
  }
  const [command] = positionals;
  if (values.help || command === undefined || command === 'help') {
    process.stdout.write(HELP);
    return command === undefined && !values.help ? 2 : 0;
  }
  switch (command) {
    case 'demo': {
      const report = await runDemo((line) => console.log(line));
      return report.outcome.reason === 'halted' ? 0 : 1;
    }
    case 'bench': {
      if (positionals[1] === 'boot') {
        return benchBootCommand(values);
      }
      const report = await runBench({
        count: wholeNumber(values.count, '--count', 20_000),
        reps: wholeNumber(values.reps, '--reps', 5),
        ...(values.paths === undefined ? {} : { paths: listOf(values.paths, '--paths', PATHS) }),
        ...(values.exits === undefined ? {} : { exits: listOf(values.exits, '--exits', EXITS) }),
        lifecycle: values['no-lifecycle'] !== true,
        busy: values.busy === true,
        progress: progressIndicator(),
      });
      process.stdout.write(formatTable(report));
      if (values.json !== undefined) {
        writeFileSync(values.json, toJson(report));
      }
      if (values.html !== undefined) {
        writeFileSync(values.html, toHtml(report));
      }
      return 0;
    }
    case 'run': {
      if (values.kernel === undefined) {
        throw new ConfigError('--kernel', 'the kernel to boot is required (an ELF vmlinux or a bzImage)');
      }
      const outcome = await runCommand({
        kernel: values.kernel,
        ...(values.initrd === undefined ? {} : { initrd: values.initrd }),
        ...(values.append === undefined ? {} : { append: values.append }),
        ...(values.memory === undefined ? {} : { memory: values.memory }),
        ...(values.cpus === undefined ? {} : { cpus: wholeNumber(values.cpus, '--cpus', 1) }),
        ...(values['standard-bzimage'] === true ? { bzImage: 'standard' as const } : {}),
      });
      process.stderr.write(`\nkvmkit: ${describeOutcome(outcome)}\n`);
      return cleanEnd(outcome) ? 0 : 1;
    }
    case 'info':
      console.log(JSON.stringify(kvmInfo(), null, 2));
      return 0;
    default:
      process.stderr.write(`kvmkit: unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

/** `kvmkit bench boot`. */
async function benchBootCommand(values: {
  kernel?: string;
  initrd?: string;
  append?: string;
  memory?: string;
  cpus?: string;
  milestone?: string;
  runs?: string;
  timeout?: string;
  'no-qemu'?: boolean;
  json?: string;
}): Promise<number> {
  if (values.kernel === undefined) {
    throw new ConfigError('--kernel', 'the kernel to boot is required (an ELF vmlinux or a bzImage)');
  }
  let milestone: RegExp;
  try {
    milestone = new RegExp(values.milestone ?? 'Memory: .* available');
  } catch (error) {
    throw new ConfigError('--milestone', `not a regular expression: ${String(error)}`);
  }
  const report = await benchBoot({
    kernel: values.kernel,
    cmdline: values.append ?? DEFAULT_CMDLINE,
    milestone,
    runs: wholeNumber(values.runs, '--runs', 3),
    memoryMib: wholeNumber(values.memory, '--memory', 512),
    vcpus: wholeNumber(values.cpus, '--cpus', 1),
    timeoutSeconds: wholeNumber(values.timeout, '--timeout', 600),
    skipQemu: values['no-qemu'] === true,
    progress: progressIndicator(),
    ...(values.initrd === undefined ? {} : { initrd: values.initrd }),
  });
  process.stdout.write(formatBootTable(report));
  if (values.json !== undefined) {
    writeFileSync(values.json, `${JSON.stringify(report, null, 2)}\n`);
  }
  return report.results.every((r) => r.unavailable !== undefined || r.median !== undefined) ? 0 : 1;
}

function wholeNumber(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) {
    return fallback;
  }
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new ConfigError(flag, `expected a whole number of at least 1, got ${JSON.stringify(value)}`);
  }
  return n;
}

function listOf<T extends string>(value: string, flag: string, allowed: readonly T[]): T[] {
  const items = value.split(',').map((v) => v.trim());
  const unknown = items.filter((v) => !allowed.includes(v as T));
  if (unknown.length > 0) {
    throw new ConfigError(flag, `unknown ${unknown.join(', ')}; choose from ${allowed.join(', ')}`);
  }
  return items as T[];
}

/** Progress on stderr: one line rewritten in a terminal, a line per tenth otherwise. */
function progressIndicator(): (done: number, total: number, label: string) => void {
  let lastTenth = -1;
  return (done, total, label) => {
    if (process.stderr.isTTY) {
      const line = `  [${String(done).padStart(String(total).length)}/${total}] ${label}`;
      process.stderr.write(`\r${line.padEnd(60)}${done === total ? '\n' : ''}`);
    } else if (Math.floor((done * 10) / total) !== lastTenth) {
      lastTenth = Math.floor((done * 10) / total);
      process.stderr.write(`  bench ${lastTenth * 10}%: ${label}\n`);
    }
  };
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    const code = error instanceof KvmkitError ? ` [${error.code}]` : '';
    process.stderr.write(`kvmkit: ${error instanceof Error ? error.message : String(error)}${code}\n`);
    process.exitCode = 1;
  },
);
