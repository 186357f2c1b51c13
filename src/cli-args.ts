/**
 * The `kvmkit` command line: each command's options and help, parsed strictly, with QEMU's
 * size rule and errors that name the flag and suggest the one meant.
 * @module
 */
import { parseArgs } from 'node:util';
import { ConfigError } from './errors.js';
import { parseSize } from './size.js';
import type { DiskOptions } from './virtio/disk.js';
import type { TapNetOptions } from './virtio/net.js';

/** A mistake on the command line: printed with the command's name, exit status 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** One option of a command. */
export interface OptionSpec {
  /** `string` options take a value, `boolean` ones do not. */
  readonly type: 'string' | 'boolean';
  /** The value's placeholder in the help, such as `FILE`. */
  readonly value?: string;
  /** One line (or a few) of help. */
  readonly help: string;
  /** May be given more than once: every value is kept, in order, in {@link ParsedCommand.lists}. */
  readonly repeatable?: boolean;
}

/** A command: its name, what it does, its positional arguments and its options. */
export interface CommandSpec {
  /** `run`, `bench boot`, … */
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  /** Positional arguments, in order, as the usage line shows them (`[KERNEL]`). */
  readonly positionals: readonly string[];
  /** Options by long name. */
  readonly options: Readonly<Record<string, OptionSpec>>;
  /** Lines after the options. */
  readonly notes?: string;
}

/** What a command line said. */
export interface ParsedCommand {
  /** Option values by long name (the last one given). */
  readonly values: Readonly<Record<string, string | boolean | undefined>>;
  /** Every value of each repeatable option, in order. */
  readonly lists: Readonly<Record<string, readonly string[]>>;
  /** Positional arguments. */
  readonly positionals: readonly string[];
  /** Whether `--help` or `-h` was given. */
  readonly help: boolean;
}

/** The edit distance between two words (insertions, deletions, substitutions). */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/** The candidate closest to `word`, if one is close enough to be what was meant. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}

/** Parses `argv` (the words after the command's name) against `spec`. */
export function parseCommand(spec: CommandSpec, argv: readonly string[]): ParsedCommand {
  const options = Object.fromEntries(Object.entries(spec.options).map(([name, o]) => [name, { type: o.type }]));
  const { tokens } = parseArgs({
    args: [...argv],
    options: { ...options, help: { type: 'boolean', short: 'h' } },
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const values: Record<string, string | boolean | undefined> = {};
  const lists: Record<string, string[]> = {};
  const positionals: string[] = [];
  let help = false;
  for (const token of tokens) {
    if (token.kind === 'positional') {
      positionals.push(token.value);
      continue;
    }
    if (token.kind !== 'option') {
      continue;
    }
    if (token.name === 'help') {
      help = true;
      continue;
    }
    const option = spec.options[token.name];
    if (option === undefined) {
      const near = closest(token.name, Object.keys(spec.options));
      throw new UsageError(`unknown option ${token.rawName}${near === undefined ? '' : ` (did you mean --${near}?)`}`);
    }
    if (option.type === 'string' && token.value === undefined) {
      throw new UsageError(`${token.rawName} needs a value (${option.value ?? 'VALUE'})`);
    }
    if (option.type === 'boolean' && token.value !== undefined) {
      throw new UsageError(`${token.rawName} takes no value (got "${token.value}")`);
    }
    values[token.name] = token.value ?? true;
    if (option.repeatable === true && token.value !== undefined) {
      lists[token.name] = [...(lists[token.name] ?? []), token.value];
    }
  }
  if (!help && positionals.length > spec.positionals.length) {
    const extra = positionals.slice(spec.positionals.length).join(' ');
    throw new UsageError(`unexpected argument ${JSON.stringify(extra)}`);
  }
  return { values, lists, positionals, help };
}

/** The help of one command. */
export function formatHelp(spec: CommandSpec): string {
  const lines = [
    `Usage: kvmkit ${spec.name}${spec.positionals.map((p) => ` ${p}`).join('')}${Object.keys(spec.options).length > 0 ? ' [options]' : ''}`,
    '',
    spec.summary,
  ];
  const entries = Object.entries(spec.options);
  if (entries.length > 0) {
    lines.push('', 'Options:');
    for (const [name, o] of entries) {
      const flag = `--${name}${o.value === undefined ? '' : ` ${o.value}`}`;
      const [first = '', ...rest] = o.help.split('\n');
      lines.push(`  ${flag.padEnd(20)} ${first}`, ...rest.map((r) => `${' '.repeat(23)}${r}`));
    }
  }
  lines.push(`  ${'-h, --help'.padEnd(20)} show this help`);
  if (spec.notes !== undefined) {
    lines.push('', spec.notes);
  }
  return `${lines.join('\n')}\n`;
}

/** A size flag, by QEMU's rule: a bare number is MiB (`--memory 512`), or give a unit (`2G`, `64K`). */
export function sizeFlag(value: string | boolean | undefined, flag: string, fallback: number): number {
  if (typeof value !== 'string') {
    return fallback;
  }
  try {
    return parseSize(value, flag, 'MiB');
  } catch (error) {
    throw error instanceof ConfigError
      ? new ConfigError(flag, `${JSON.stringify(value)} is not a size: give MiB (512) or a unit (512M, 2G)`)
      : error;
  }
}

/** A flag that takes a whole number of at least 1. */
export function countFlag(value: string | boolean | undefined, flag: string, fallback: number): number {
  if (typeof value !== 'string') {
    return fallback;
  }
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new ConfigError(flag, `expected a whole number of at least 1, got ${JSON.stringify(value)}`);
  }
  return n;
}

/** `--vsock CID[,uds=PATH|,vhost]`: `{ vsock }` for the run's devices, or nothing without the flag. */
export function vsockFlag(
  value: string | boolean | undefined,
  flag: string,
): { vsock?: { cid: number; uds?: string; vhost?: boolean } } {
  if (typeof value !== 'string') {
    return {};
  }
  const [first = '', ...rest] = value.split(',');
  const cid = Number(first);
  if (first.trim() === '' || !Number.isSafeInteger(cid) || cid < 3) {
    throw new ConfigError(flag, `expected CID[,uds=PATH|,vhost] with a CID of 3 or more, got ${JSON.stringify(value)}`);
  }
  const options = rest.join(',');
  if (options === '') {
    return { vsock: { cid } };
  }
  if (options === 'vhost') {
    return { vsock: { cid, vhost: true } };
  }
  if (!options.startsWith('uds=') || options.length === 4) {
    throw new ConfigError(flag, `expected uds=PATH or vhost after the CID, got ${JSON.stringify(options)}`);
  }
  return { vsock: { cid, uds: options.slice(4) } };
}

/**
 * A `--disk FILE[,ro][,overlay]` flag: the image, then options — `ro` (the guest sees it
 * read-only) or `overlay` (writes go to a temporary copy-on-write overlay, the image is
 * never written).
 */
export function diskFlag(value: string): DiskOptions {
  const parts = value.split(',');
  const options: string[] = [];
  while (parts.length > 1 && DISK_OPTIONS.includes(parts.at(-1) as (typeof DISK_OPTIONS)[number])) {
    options.unshift(parts.pop() as string);
  }
  const path = parts.join(',');
  if (path === '') {
    throw new ConfigError('--disk', `${JSON.stringify(value)} names no image: give --disk FILE[,ro][,overlay]`);
  }
  if (options.includes('ro') && options.includes('overlay')) {
    throw new ConfigError('--disk', `${JSON.stringify(value)}: choose ro or overlay, not both`);
  }
  return {
    path,
    ...(options.includes('ro') ? { readOnly: true } : {}),
    ...(options.includes('overlay') ? { overlay: true } : {}),
  };
}

const DISK_OPTIONS = ['ro', 'overlay'] as const;

/** A flag that takes a comma-separated list of `allowed` names. */
export function listFlag<T extends string>(value: string, flag: string, allowed: readonly T[]): T[] {
  const items = value.split(',').map((v) => v.trim());
  for (const item of items) {
    if (!allowed.includes(item as T)) {
      const near = closest(item, allowed);
      throw new ConfigError(
        flag,
        `unknown "${item}"${near === undefined ? '' : ` (did you mean ${near}?)`}; choose from ${allowed.join(', ')}`,
      );
    }
  }
  return items as T[];
}

/** A `--net` value: `tap=IFNAME[,mac=MAC][,vhost]`. */
export function netFlag(value: string): TapNetOptions {
  const fields = new Map<string, string>();
  const usage = 'tap=IFNAME[,mac=MAC][,vhost]';
  for (const item of value.split(',')) {
    const [key = '', ...rest] = item.split('=');
    const valid = key === 'vhost' ? rest.length === 0 : ['tap', 'mac'].includes(key) && rest.length > 0;
    if (!valid || fields.has(key)) {
      throw new ConfigError('--net', `expected ${usage}, got ${JSON.stringify(value)}`);
    }
    fields.set(key, rest.join('='));
  }
  const tap = fields.get('tap');
  if (tap === undefined || tap === '') {
    throw new ConfigError('--net', `expected ${usage}, got ${JSON.stringify(value)}: name the TAP`);
  }
  const mac = fields.get('mac');
  return {
    tap,
    ...(mac === undefined ? {} : { mac }),
    ...(fields.has('vhost') ? { vhost: true } : {}),
  };
}
