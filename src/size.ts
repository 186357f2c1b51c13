/**
 * Sizes such as `"512M"` or `"4KiB"`.
 * @module
 */
import { ConfigError } from './errors.js';
import { describe } from './validate.js';

/**
 * A size: a number of bytes, or a string with a binary unit: `"64K"`, `"512M"`, `"2GiB"`,
 * `"4096B"`. A string without a unit is refused, because QEMU users read `"512"` as MiB
 * and everyone else as bytes (the `kvmkit` command line follows QEMU: `--memory 512` is 512 MiB).
 */
export type Size = number | string;

const UNITS: Record<string, number> = {
  B: 1,
  K: 2 ** 10,
  M: 2 ** 20,
  G: 2 ** 30,
  T: 2 ** 40,
};

const SIZE = /^\s*(\d+)\s*(?:([KMGT])(?:i?B)?|(B))?\s*$/i;

/**
 * Parses `size` into bytes; `field` names it in the error. `bareUnit` is the unit of a
 * string without one: none (an error, as in the API) or MiB (QEMU's rule, as on the command line).
 * @example
 * ```ts
 * parseSize('512M', 'memory'); // 536870912
 * parseSize('512', '--memory', 'MiB'); // 536870912
 * ```
 */
export function parseSize(size: unknown, field: string, bareUnit?: 'MiB'): number {
  if (typeof size === 'number') {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new ConfigError(field, `${size} is not a whole number of bytes from 0 to 2^53-1`);
    }
    return size;
  }
  if (typeof size !== 'string') {
    throw new ConfigError(field, `expected a number of bytes or a string like "512M", got ${describe(size)}`);
  }
  const m = SIZE.exec(size);
  if (m?.[1] === undefined) {
    throw new ConfigError(field, `${JSON.stringify(size)} is not a size like "64K", "512M" or "2G"`);
  }
  const unitName = (m[2] ?? m[3])?.toUpperCase();
  if (unitName === undefined && bareUnit === undefined) {
    throw new ConfigError(
      field,
      `${JSON.stringify(size)} has no unit: write "${m[1]}M" for MiB, or the number ${m[1]} for bytes`,
    );
  }
  const unit = UNITS[unitName ?? 'M'] ?? 1;
  const bytes = Number(m[1]) * unit;
  if (!Number.isSafeInteger(bytes)) {
    throw new ConfigError(field, `${JSON.stringify(size)} is larger than 2^53-1 bytes`);
  }
  return bytes;
}

/** Formats `bytes` the way a person reads sizes: `512 MiB`, `1.5 GiB`. */
export function formatSize(bytes: number): string {
  for (const [unit, scale] of [
    ['TiB', 2 ** 40],
    ['GiB', 2 ** 30],
    ['MiB', 2 ** 20],
    ['KiB', 2 ** 10],
  ] as const) {
    if (bytes >= scale) {
      const n = bytes / scale;
      return `${Number.isInteger(n) ? n : n.toFixed(1)} ${unit}`;
    }
  }
  return `${bytes} bytes`;
}
