import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../src/config.js';
import { ConfigError, fromNative, KvmkitError } from '../src/errors.js';
import { parseSize } from '../src/size.js';
import { thrownBy } from './throws.js';

/** The field the ConfigError `f` throws names. */
function fieldOf(f: () => unknown): string {
  return thrownBy(f, ConfigError).field;
}

describe('parseSize', () => {
  it('reads bytes and binary suffixes', () => {
    expect(parseSize(4096, 'm')).toBe(4096);
    expect(parseSize('4096B', 'm')).toBe(4096);
    expect(parseSize('512', '--memory', 'MiB')).toBe(512 * 2 ** 20);
    expect(parseSize('64K', 'm')).toBe(65536);
    expect(parseSize('512M', 'm')).toBe(512 * 2 ** 20);
    expect(parseSize('2GiB', 'm')).toBe(2 * 2 ** 30);
    expect(parseSize('1tb', 'm')).toBe(2 ** 40);
  });

  it('names the field in errors', () => {
    expect(() => parseSize('lots', 'memory')).toThrow(/memory: "lots" is not a size/);
    expect(() => parseSize(-1, 'memory')).toThrow(ConfigError);
    expect(() => parseSize(1.5, 'memory')).toThrow(ConfigError);
    expect(() => parseSize('99999999999T', 'memory')).toThrow(/larger than 2\^53-1/);
    expect(() => parseSize(null, 'memory')).toThrow(/got null/);
    expect(() => parseSize('4096', 'memory')).toThrow(
      /"4096" has no unit: write "4096M" for MiB, or the number 4096 for bytes/,
    );
  });
});

describe('resolveConfig', () => {
  it('fills in defaults', () => {
    const r = resolveConfig({ memory: '1M' });
    expect(r.native).toEqual({
      memory: 2 ** 20,
      vcpus: 1,
      unhandled: 'error',
      handoffSpinMicros: 200,
      irqchip: false,
      backing: 'anonymous',
      hugePages: false,
    });
    expect(r.handlerTimeoutMs).toBe(10_000);
    expect(r.eventLoopSpinMicros).toBe(50);
  });

  it('keeps region lists with their addresses', () => {
    const r = resolveConfig({
      memory: [
        { guestAddr: 0, size: '3G' },
        { guestAddr: 2 ** 32, size: '1G' },
      ],
      vcpus: 2,
    });
    expect(r.native.memory).toEqual([
      { guestAddr: 0, size: 3 * 2 ** 30 },
      { guestAddr: 2 ** 32, size: 2 ** 30 },
    ]);
  });

  it('rejects each bad field by name', () => {
    expect(fieldOf(() => resolveConfig({ memory: '1M', vcpus: 0 }))).toBe('vcpus');
    expect(fieldOf(() => resolveConfig({ memory: '1M', vcpus: 1.5 }))).toBe('vcpus');
    expect(fieldOf(() => resolveConfig({ memory: true as never }))).toBe('memory');
    expect(fieldOf(() => resolveConfig({ memory: [{ guestAddr: -1, size: 4096 }] }))).toBe('memory[0].guestAddr');
    expect(fieldOf(() => resolveConfig({ memory: [{ guestAddr: 0, size: 'x' }] }))).toBe('memory[0].size');
    expect(fieldOf(() => resolveConfig({ memory: [null as never] }))).toBe('memory[0]');
    expect(fieldOf(() => resolveConfig({ memory: '1M', unhandled: 'panic' as never }))).toBe('unhandled');
    expect(fieldOf(() => resolveConfig({ memory: '1M', handoffSpinMicros: 2e6 }))).toBe('handoffSpinMicros');
    expect(fieldOf(() => resolveConfig({ memory: '1M', handlerTimeoutMs: -1 }))).toBe('handlerTimeoutMs');
    expect(fieldOf(() => resolveConfig({ memory: '1M', eventLoopSpinMicros: 0.5 }))).toBe('eventLoopSpinMicros');
    expect(fieldOf(() => resolveConfig({ memory: '1M', irqchip: 'yes' as never }))).toBe('irqchip');
    expect(fieldOf(() => resolveConfig({ memory: '1M', hugePages: 1 as never }))).toBe('hugePages');
    expect(fieldOf(() => resolveConfig({ memory: '1M', backing: 'disk' as never }))).toBe('backing');
    expect(fieldOf(() => resolveConfig({ memory: '1M', backing: { file: '' } }))).toBe('backing');
    expect(resolveConfig({ memory: '1M', backing: { file: '/tmp/ram' } }).native).toMatchObject({
      backing: 'file',
      backingPath: '/tmp/ram',
    });
    expect(fieldOf(() => resolveConfig(null as never))).toBe('config');
  });
});

describe('fromNative', () => {
  it('turns native config errors into ConfigError with the field', () => {
    const native = Object.assign(new Error('invalid config: memory[1].size: 0x64 is not a multiple'), {
      code: 'INVALID_CONFIG',
    });
    const e = fromNative(native);
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as ConfigError).field).toBe('memory[1].size');
  });

  it('keeps other codes and reports caught panics as INTERNAL_PANIC', () => {
    const e = fromNative(Object.assign(new Error('nope'), { code: 'KVM_NOT_FOUND' }));
    expect(e).toBeInstanceOf(KvmkitError);
    expect((e as KvmkitError).code).toBe('KVM_NOT_FOUND');
    const p = fromNative(Object.assign(new Error('panicked'), { code: 'GenericFailure' }));
    expect((p as KvmkitError).code).toBe('INTERNAL_PANIC');
  });
});
