#!/usr/bin/env node
/**
 * The `kvmkit` command.
 * @module
 */
import { readFileSync, writeFileSync } from 'node:fs';
import {
  benchBoot,
  benchVirtio,
  EXITS,
  FOOTPRINT_EXITS,
  FOOTPRINT_PATHS,
  formatBootTable,
  formatFootprintTable,
  formatTable,
  formatVirtioTable,
  measureFootprints,
  PATHS,
  runBench,
  toHtml,
  toJson,
} from './bench/index.js';
import {
  type CommandSpec,
  closest,
  countFlag,
  diskFlag,
  formatHelp,
  listFlag,
  netFlag,
  type ParsedCommand,
  parseCommand,
  sizeFlag,
  UsageError,
  vsockFlag,
} from './cli-args.js';
import { describeOutcome, runDemo } from './demo.js';
import { ConfigError, KvmkitError } from './errors.js';
import { formatHostReport, hostReport } from './info-command.js';
import { DEFAULT_CMDLINE } from './linux.js';
import { cleanEnd, keepConsole, runCommand } from './run-command.js';

const MIB = 2 ** 20;

/** The command being run, for error messages. */
let commandName = '';

const KERNEL = {
  type: 'string',
  value: 'FILE',
  help: 'the kernel: an ELF vmlinux or a bzImage (or give it as the first argument)',
} as const;
const LINUX_OPTIONS = {
  kernel: KERNEL,
  initrd: { type: 'string', value: 'FILE', help: 'an initrd or initramfs' },
  append: {
    type: 'string',
    value: 'TEXT',
    help: 'the kernel command line (default: console on ttyS0);\nconsole=ttyS0 is added unless it sets a console',
  },
  memory: {
    type: 'string',
    value: 'SIZE',
    help: 'guest RAM, in MiB as in QEMU (512) or with a unit (2G); default 512M',
  },
  cpus: { type: 'string', value: 'N', help: 'vCPUs (default 1)' },
} as const;

const COMMANDS: Record<string, CommandSpec> = {
  demo: {
    name: 'demo',
    summary: 'Boot the bundled demo guest and show what it did.',
    positionals: [],
    options: {},
  },
  run: {
    name: 'run',
    summary: 'Boot a Linux kernel with its console on this terminal (Ctrl-A x quits).',
    positionals: ['[KERNEL]'],
    options: {
      ...LINUX_OPTIONS,
      'standard-bzimage': {
        type: 'boolean',
        help: 'enter a bzImage through its own decompressor (default: decompress\nit on the host, cached in $KVMKIT_CACHE_DIR or ~/.cache/kvmkit)',
      },
      rng: { type: 'boolean', help: 'a virtio entropy device (/dev/hwrng in the guest)' },
      disk: {
        type: 'string',
        value: 'FILE[,ro]',
        repeatable: true,
        help: 'a virtio disk on a raw image (/dev/vda, then vdb… in order; repeat\nfor more); ,ro: read-only; ,overlay: writes go to a temporary\ncopy-on-write overlay and the image is never written',
      },
      net: {
        type: 'string',
        value: 'tap=IFNAME',
        repeatable: true,
        help: "a virtio network device on an existing TAP interface (eth0, then\neth1… in order; repeat for more; make it with ip tuntap add dev\nIFNAME mode tap user $USER); ,mac=02:00:00:00:00:01 sets its MAC;\n,vhost: the kernel's vhost-net moves the frames (needs /dev/vhost-net)",
      },
      'virtio-console': {
        type: 'boolean',
        help: 'a virtio console (hvc0): its output is shown with COM1\'s and\nthe terminal types into it (boot with --append "... console=hvc0")',
      },
      vsock: {
        type: 'string',
        value: 'CID[,uds=PATH]',
        help: 'a virtio-vsock device giving the guest context ID CID (3 or more);\nwith uds=PATH, Firecracker-style Unix sockets: the host connects\nto PATH and writes "CONNECT <port>\\n", guest connections to host\nport P reach PATH_P; with ,vhost: the kernel\'s vhost-vsock serves\nit and host programs use AF_VSOCK (needs /dev/vhost-vsock)',
      },
    },
    notes: 'Exits 0 when the guest powers off, resets or is quit; 1 with the reason otherwise.',
  },
  bench: {
    name: 'bench',
    summary: "Measure exit-handling latency: kvmkit's paths against a C KVM loop and QEMU.",
    positionals: [],
    options: {
      count: { type: 'string', value: 'N', help: 'exits per run (default 20000)' },
      reps: { type: 'string', value: 'N', help: 'interleaved repetitions (default 5)' },
      paths: { type: 'string', value: 'LIST', help: `comma-separated: ${PATHS.join(', ')} (default all)` },
      exits: { type: 'string', value: 'LIST', help: `comma-separated: ${EXITS.join(', ')} (default all)` },
      'no-lifecycle': { type: 'boolean', help: 'skip start-up time and idle-VM memory' },
      busy: {
        type: 'boolean',
        help: 'also run the suite with one CPU held by a busy process (started and stopped by the bench), side by side',
      },
      json: { type: 'string', value: 'FILE', help: 'also write the results as JSON' },
      html: { type: 'string', value: 'FILE', help: 'also write a page with the latency distributions' },
    },
    notes:
      "kvmkit bench boot measures a Linux boot, kvmkit bench virtio a guest's disk, kvmkit bench footprint\nwhat the host runs per exit: see their --help.",
  },
  'bench footprint': {
    name: 'bench footprint',
    summary:
      "Count what the host runs for one exit, path by path: instructions and 4 KiB code pages from one\nKVM_RUN to the next, by single-stepping the vCPU's thread (ptrace) after a warm-up.",
    positionals: [],
    options: {
      paths: { type: 'string', value: 'LIST', help: `comma-separated: ${FOOTPRINT_PATHS.join(', ')} (default all)` },
      exits: {
        type: 'string',
        value: 'LIST',
        help: `comma-separated: ${FOOTPRINT_EXITS.join(', ')} (default all)`,
      },
      windows: {
        type: 'string',
        value: 'N',
        help: 'exits stepped per path and kind, of which the median is shown (default 9)',
      },
      json: { type: 'string', value: 'FILE', help: 'also write the results as JSON' },
    },
    notes:
      "Needs permission to ptrace a child process: root, or any user under Yama ptrace_scope 0 or 1.\nThe counts do not move with the host's load; where every exit flushes the TLB (KVM nested under an\nemulator) each code page costs a refill per exit.",
  },
  'bench boot': {
    name: 'bench boot',
    summary: "Measure a Linux kernel's boot time to a console milestone, kvmkit against QEMU.",
    positionals: ['[KERNEL]'],
    options: {
      ...LINUX_OPTIONS,
      milestone: {
        type: 'string',
        value: 'REGEX',
        help: 'the console line that ends a boot (default: "Memory: .* available")',
      },
      runs: { type: 'string', value: 'N', help: 'boots of each, alternating (default 3)' },
      timeout: {
        type: 'string',
        value: 'SECONDS',
        help: 'a boot that takes longer counts as not reaching it (default 600)',
      },
      'no-qemu': { type: 'boolean', help: 'boot with kvmkit only' },
      json: { type: 'string', value: 'FILE', help: 'also write the results as JSON' },
    },
  },
  'bench virtio': {
    name: 'bench virtio',
    summary: 'Measure virtio-blk and virtio-vsock throughput and latency from a Linux guest, kvmkit against QEMU.',
    positionals: ['[KERNEL]'],
    options: {
      kernel: KERNEL,
      initrd: {
        type: 'string',
        value: 'FILE',
        help: "kvmkit's test initramfs (npm run fixtures), which runs the guest side",
      },
      memory: LINUX_OPTIONS.memory,
      disk: { type: 'string', value: 'SIZE', help: 'the disk, read and written whole each run (default 128M)' },
      reads: { type: 'string', value: 'N', help: '4 KiB reads in the latency test (default 4096)' },
      'vsock-size': { type: 'string', value: 'SIZE', help: 'moved each way over vsock (default 64M)' },
      'vsock-rounds': { type: 'string', value: 'N', help: 'round trips of 64 bytes over vsock (default 2000)' },
      runs: { type: 'string', value: 'N', help: 'runs of each, alternating (default 3)' },
      timeout: { type: 'string', value: 'SECONDS', help: 'the longest a run may take (default 600)' },
      'no-qemu': { type: 'boolean', help: 'run kvmkit only' },
      json: { type: 'string', value: 'FILE', help: 'also write the results as JSON' },
    },
    notes:
      'Both VMMs serve the same raw disk file from the page cache; the guest reads and writes it O_DIRECT.\nvsock: QEMU through vhost-vsock (needs /dev/vhost-vsock), kvmkit through its Unix socket; one\nprogram (vsock-bench, built by npm run fixtures beside the initramfs) times both from the host.',
  },
  info: {
    name: 'info',
    summary: "Check /dev/kvm and describe this host's KVM: its kind, limits, and whether QEMU is here.",
    positionals: [],
    options: { json: { type: 'boolean', help: 'print it as JSON, for programs' } },
  },
};

const HELP = `Usage: kvmkit <command> [options]

Commands:
${Object.values(COMMANDS)
  .map((c) => `  ${c.name.padEnd(12)} ${c.summary}`)
  .join('\n')}
  help         Show this help, or a command's: kvmkit help run

Options:
  -h, --help     Show this help (after a command: that command's)
  -v, --version  Print the version

Sizes on the command line follow QEMU: a bare number is MiB (--memory 512), or give a unit (2G).
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** The kernel, from `--kernel` or the first argument. */
function kernelOf(command: string, parsed: ParsedCommand): string {
  const [positional] = parsed.positionals;
  const flag = parsed.values.kernel;
  if (typeof flag === 'string' && positional !== undefined) {
    throw new UsageError(`the kernel is given twice: --kernel ${flag} and ${positional}`);
  }
  const kernel = typeof flag === 'string' ? flag : positional;
  if (kernel === undefined) {
    throw new UsageError(`which kernel? kvmkit ${command} vmlinuz (an ELF vmlinux or a bzImage)`);
  }
  return kernel;
}

function text(value: string | boolean | undefined): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) {
    process.stderr.write(HELP);
    return 2;
  }
  if (first === '-h' || first === '--help') {
    process.stdout.write(HELP);
    return 0;
  }
  if (first === '-v' || first === '--version') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  if (first === 'help') {
    const topic = COMMANDS[rest.join(' ')];
    process.stdout.write(topic === undefined ? HELP : formatHelp(topic));
    return 0;
  }
  // `bench` and its subcommands (`bench boot`, ...) are commands of their own.
  const sub = first === 'bench' && `bench ${rest[0]}` in COMMANDS ? rest[0] : undefined;
  const name = sub === undefined ? first : `bench ${sub}`;
  const spec = COMMANDS[name];
  if (spec === undefined) {
    const near = first.startsWith('-') ? undefined : closest(first, Object.keys(COMMANDS));
    const what = first.startsWith('-') ? `unknown option ${first} before a command` : `unknown command "${first}"`;
    throw new UsageError(`${what}${near === undefined ? '' : ` (did you mean ${near}?)`}`);
  }
  commandName = name;
  const parsed = parseCommand(spec, sub === undefined ? rest : rest.slice(1));
  if (parsed.help) {
    process.stdout.write(formatHelp(spec));
    return 0;
  }
  const v = parsed.values;
  switch (name) {
    case 'demo': {
      const report = await runDemo((line) => console.log(line));
      return report.outcome.reason === 'halted' ? 0 : 1;
    }
    case 'bench': {
      const report = await runBench({
        count: countFlag(v.count, '--count', 20_000),
        reps: countFlag(v.reps, '--reps', 5),
        ...(typeof v.paths === 'string' ? { paths: listFlag(v.paths, '--paths', PATHS) } : {}),
        ...(typeof v.exits === 'string' ? { exits: listFlag(v.exits, '--exits', EXITS) } : {}),
        lifecycle: v['no-lifecycle'] !== true,
        busy: v.busy === true,
        progress: progressIndicator(),
      });
      process.stdout.write(formatTable(report));
      writeIf(text(v.json), () => toJson(report));
      writeIf(text(v.html), () => toHtml(report));
      return 0;
    }
    case 'bench boot':
      return benchBootCommand(parsed);
    case 'bench virtio':
      return benchVirtioCommand(parsed);
    case 'bench footprint': {
      const report = await measureFootprints({
        ...(typeof v.paths === 'string' ? { paths: listFlag(v.paths, '--paths', FOOTPRINT_PATHS) } : {}),
        ...(typeof v.exits === 'string' ? { exits: listFlag(v.exits, '--exits', FOOTPRINT_EXITS) } : {}),
        windows: countFlag(v.windows, '--windows', 9),
        progress: progressIndicator(),
      });
      process.stdout.write(formatFootprintTable(report));
      writeIf(text(v.json), () => `${JSON.stringify(report, null, 2)}\n`);
      return report.unavailable.length === 0 ? 0 : 1;
    }
    case 'run': {
      const kernel = kernelOf('run', parsed);
      const initrd = text(v.initrd);
      const append = text(v.append);
      const outcome = await runCommand({
        kernel,
        ...(initrd === undefined ? {} : { initrd }),
        ...(append === undefined ? {} : { append }),
        memory: sizeFlag(v.memory, '--memory', 512 * MIB),
        cpus: countFlag(v.cpus, '--cpus', 1),
        ...(v['standard-bzimage'] === true ? { bzImage: 'standard' as const } : {}),
        devices: {
          rng: v.rng === true,
          disks: (parsed.lists.disk ?? []).map(diskFlag),
          virtioConsole: v['virtio-console'] === true,
          net: (parsed.lists.net ?? []).map(netFlag),
          ...vsockFlag(v.vsock, '--vsock'),
        },
      });
      process.stderr.write(`\nkvmkit: ${describeOutcome(outcome)}\n`);
      return cleanEnd(outcome) ? 0 : 1;
    }
    default: {
      const report = hostReport();
      process.stdout.write(v.json === true ? `${JSON.stringify(report, null, 2)}\n` : formatHostReport(report));
      return 'error' in report.kvm ? 1 : 0;
    }
  }
}

function writeIf(file: string | undefined, content: () => string): void {
  if (file !== undefined) {
    writeFileSync(file, content());
  }
}

/** `kvmkit bench boot`. */
async function benchBootCommand(parsed: ParsedCommand): Promise<number> {
  const v = parsed.values;
  let milestone: RegExp;
  try {
    milestone = new RegExp(text(v.milestone) ?? 'Memory: .* available');
  } catch (error) {
    throw new ConfigError('--milestone', `not a regular expression: ${String(error)}`);
  }
  const memory = sizeFlag(v.memory, '--memory', 512 * MIB);
  if (memory % MIB !== 0) {
    throw new ConfigError('--memory', 'QEMU takes whole MiB: give a multiple of 1M');
  }
  const initrd = text(v.initrd);
  const report = await benchBoot({
    kernel: kernelOf('bench boot', parsed),
    cmdline: keepConsole(text(v.append) ?? DEFAULT_CMDLINE),
    milestone,
    runs: countFlag(v.runs, '--runs', 3),
    memoryMib: memory / MIB,
    vcpus: countFlag(v.cpus, '--cpus', 1),
    timeoutSeconds: countFlag(v.timeout, '--timeout', 600),
    skipQemu: v['no-qemu'] === true,
    progress: progressIndicator(),
    ...(initrd === undefined ? {} : { initrd }),
  });
  process.stdout.write(formatBootTable(report));
  writeIf(text(v.json), () => `${JSON.stringify(report, null, 2)}\n`);
  return report.results.every((r) => r.unavailable !== undefined || r.median !== undefined) ? 0 : 1;
}

/** `kvmkit bench virtio`. */
async function benchVirtioCommand(parsed: ParsedCommand): Promise<number> {
  const v = parsed.values;
  const initrd = text(v.initrd);
  if (initrd === undefined) {
    throw new UsageError("which initramfs? --initrd fixtures/cache/initramfs (kvmkit's, from npm run fixtures)");
  }
  const disk = sizeFlag(v.disk, '--disk', 128 * MIB);
  if (disk % MIB !== 0) {
    throw new ConfigError('--disk', 'the guest moves whole MiB: give a multiple of 1M');
  }
  const vsockSize = sizeFlag(v['vsock-size'], '--vsock-size', 64 * MIB);
  if (vsockSize % MIB !== 0) {
    throw new ConfigError('--vsock-size', 'the benchmark moves whole MiB: give a multiple of 1M');
  }
  const report = await benchVirtio({
    kernel: kernelOf('bench virtio', parsed),
    initrd,
    memoryMib: sizeFlag(v.memory, '--memory', 512 * MIB) / MIB,
    diskMib: disk / MIB,
    latencyReads: countFlag(v.reads, '--reads', 4096),
    vsockMib: vsockSize / MIB,
    vsockRounds: countFlag(v['vsock-rounds'], '--vsock-rounds', 2000),
    runs: countFlag(v.runs, '--runs', 3),
    timeoutSeconds: countFlag(v.timeout, '--timeout', 600),
    skipQemu: v['no-qemu'] === true,
    progress: progressIndicator(),
  });
  process.stdout.write(formatVirtioTable(report));
  writeIf(text(v.json), () => `${JSON.stringify(report, null, 2)}\n`);
  return report.results.every((r) => r.unavailable !== undefined || Object.keys(r.median).length > 0) ? 0 : 1;
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

/** The flags that set each API configuration field, for errors the API reports. */
const FLAG_OF: Record<string, string> = { memory: '--memory', vcpus: '--cpus' };

/** One line for an error, in the command line's words: flags, not API fields. */
function describeError(error: unknown): string {
  if (error instanceof UsageError) {
    return error.message;
  }
  if (error instanceof ConfigError) {
    return `${FLAG_OF[error.field] ?? error.field}: ${error.reason}`;
  }
  if (error instanceof KvmkitError) {
    return error.message;
  }
  return error instanceof Error ? (error.stack ?? error.message) : String(error);
}

// A reader that goes away (`kvmkit demo | head -1`) ends the command quietly, as for any Unix tool.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') {
    process.exit(0);
  }
  throw error;
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    const command = commandName === '' ? '' : ` ${commandName}`;
    const badFlag = error instanceof ConfigError && error.field.startsWith('-');
    if (error instanceof UsageError || badFlag) {
      process.stderr.write(`kvmkit${command}: ${describeError(error)}\nSee "kvmkit${command} --help".\n`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`kvmkit${command}: ${describeError(error)}\n`);
    process.exitCode = 1;
  },
);
