/**
 * Sizes such as `"512M"` or `"4KiB"`.
 * @module
 */
import { ConfigError } from './errors.js';

/** A size in bytes, or a string with a binary suffix: `"64K"`, `"512M"`, `"2GiB"`. */
export type Size = number | string;

const UNITS: Record<string, number> = {
  '': 1,
  B: 1,
  K: 2 ** 10,
  M: 2 ** 20,
  G: 2 ** 30,
  T: 2 ** 40,
};

const SIZE = /^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$/i;

/** Parses `size` into bytes; `field` names it in the error. */
export function parseSize(size: unknown, field: string): number {
  if (typeof size === 'number') {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new ConfigError(field, `${size} is not a whole number of bytes from 0 to 2^53-1`);
    }
    return size;
  }
  if (typeof size !== 'string') {
    throw new ConfigError(field, `expected a number of bytes or a string like "512M", got ${typeof size}`);
  }
  const m = SIZE.exec(size);
  const unit = UNITS[(m?.[2] ?? '').toUpperCase()];
  if (m?.[1] === undefined || unit === undefined) {
    throw new ConfigError(field, `${JSON.stringify(size)} is not a size like "4096", "64K", "512M" or "2G"`);
  }
  const bytes = Number(m[1]) * unit;
  if (!Number.isSafeInteger(bytes)) {
    throw new ConfigError(field, `${JSON.stringify(size)} is larger than 2^53-1 bytes`);
  }
  return bytes;
}
