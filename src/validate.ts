/**
 * Argument checks shared by every public entry point. Each names the argument, shows the
 * value as given and says what is expected, as an {@link ArgumentError} (or, for
 * configuration fields, a {@link ConfigError}).
 * @module
 */
import { ArgumentError, ConfigError, type KvmkitError } from './errors.js';

/** Builds the error for a bad value: {@link ArgumentError} for method arguments, {@link ConfigError} for config fields. */
export type Complaint = (name: string, message: string) => KvmkitError;

/** The complaint about a method's argument. */
export const badArgument: Complaint = (name, message) => new ArgumentError(name, message);
/** The complaint about a configuration field. */
export const badConfig: Complaint = (name, message) => new ConfigError(name, message);

/** A value as the user gave it, with its type where that is the problem: `"2" (a string)`, `2.5`, `null`. */
export function describe(value: unknown): string {
  if (typeof value === 'string') {
    return `${JSON.stringify(value)} (a string)`;
  }
  if (typeof value === 'bigint') {
    return `${value}n (a bigint)`;
  }
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) {
    return String(value);
  }
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

/** Checks that `value` is a whole number from `min` to `max`. */
export function wholeNumber(
  value: unknown,
  name: string,
  min: number,
  max: number,
  complain: Complaint = badArgument,
): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = `from ${min} to ${max === Number.MAX_SAFE_INTEGER ? '2^53-1' : hexIfLarge(max)}`;
    throw complain(name, `expected a whole number ${range}, got ${describe(value)}`);
  }
  return value;
}

/** Checks a guest-physical address or port: a whole number from 0 to 2^53-1. */
export function address(value: unknown, name: string): number {
  return wholeNumber(value, name, 0, Number.MAX_SAFE_INTEGER);
}

/** Checks that `value` holds bytes: a `Uint8Array` (a `Buffer` is one). */
export function bytes(value: unknown, name: string): Uint8Array {
  if (!(value instanceof Uint8Array)) {
    const hint = Array.isArray(value) ? ' (wrap it: Uint8Array.from([...]))' : '';
    throw new ArgumentError(name, `expected a Uint8Array or Buffer, got ${describe(value)}${hint}`);
  }
  return value;
}

/** Checks that `value` is one of `allowed`. */
export function oneOf<T extends string>(
  value: unknown,
  name: string,
  allowed: readonly T[],
  complain: Complaint = badArgument,
): T {
  if (!allowed.includes(value as T)) {
    throw complain(name, `expected ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${describe(value)}`);
  }
  return value as T;
}

/** Checks that `value` is true or false. */
export function boolean(value: unknown, name: string, complain: Complaint = badArgument): boolean {
  if (typeof value !== 'boolean') {
    throw complain(name, `expected true or false, got ${describe(value)}`);
  }
  return value;
}

/** Checks that `value` is an object (not null, not an array). */
export function object(value: unknown, name: string, complain: Complaint = badArgument): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw complain(name, `expected an object, got ${describe(value)}`);
  }
  return value as Record<string, unknown>;
}

/** Checks that `value` is a non-empty string. */
export function text(value: unknown, name: string, complain: Complaint = badArgument): string {
  if (typeof value !== 'string' || value === '') {
    throw complain(name, `expected a non-empty string, got ${describe(value)}`);
  }
  return value;
}

/** Checks that `value` is a string (maybe empty). */
export function string(value: unknown, name: string): string {
  if (typeof value !== 'string') {
    throw new ArgumentError(name, `expected a string, got ${describe(value)}`);
  }
  return value;
}

/** Checks that `value` is a non-empty string, or absent. */
export function optionalText(value: unknown, name: string): void {
  if (value !== undefined) {
    text(value, name);
  }
}

/** Checks that `value` is an array, and each item with `check` (named `name[i]`). */
export function eachOf(value: unknown, name: string, check: (item: unknown, name: string) => void): void {
  if (!Array.isArray(value)) {
    throw new ArgumentError(name, `expected an array, got ${describe(value)}`);
  }
  for (const [i, item] of value.entries()) {
    check(item, `${name}[${i}]`);
  }
}

/** Checks that `value` is a function, or absent. */
export function optionalFunction(value: unknown, name: string): void {
  if (value !== undefined && typeof value !== 'function') {
    throw new ArgumentError(name, `expected a function, got ${describe(value)}`);
  }
}

/** Checks that `value` fits in `bits` unsigned bits: a number for up to 32, a bigint (or safe number) for 64. */
export function unsigned(value: unknown, name: string, bits: 8 | 16 | 32 | 64): number | bigint {
  const limit = 2n ** BigInt(bits) - 1n;
  const ok =
    (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && BigInt(value) <= limit) ||
    (bits === 64 && typeof value === 'bigint' && value >= 0n && value <= limit);
  if (!ok) {
    throw new ArgumentError(name, `expected a whole number from 0 to 0x${limit.toString(16)}, got ${describe(value)}`);
  }
  return value as number | bigint;
}

function hexIfLarge(n: number): string {
  return n >= 0xff ? `0x${n.toString(16)}` : String(n);
}

/** Checks a device registration's arguments: where it sits and what answers it. */
export function deviceArgs(space: 'port' | 'mmio', base: unknown, length: unknown, device: unknown): void {
  const top = space === 'port' ? 0xffff : Number.MAX_SAFE_INTEGER;
  const first = wholeNumber(base, 'base', 0, top);
  const count = wholeNumber(length, 'length', 1, top + 1);
  if (space === 'port' && first + count > top + 1) {
    throw new ArgumentError('length', `${count} ports from 0x${first.toString(16)} run past the last port, 0xffff`);
  }
  const d = object(device, 'device');
  text(d.name, 'device.name');
  optionalFunction(d.read, 'device.read');
  optionalFunction(d.write, 'device.write');
  if (d.posted !== undefined) {
    boolean(d.posted, 'device.posted');
  }
}
