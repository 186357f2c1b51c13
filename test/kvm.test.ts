import { expect, it } from 'vitest';
import { KvmkitError, kvmInfo, Machine } from '../src/index.js';
import { describeKvm, inCi, kvm } from './kvm.js';

it.runIf(inCi)('has a usable /dev/kvm (required in CI)', () => {
  expect(kvm.ok ? 'usable' : kvm.error.message).toBe('usable');
});

it('reports a missing KVM device with what to do', () => {
  expect(() => kvmInfo('/nonexistent/kvm')).toThrow(KvmkitError);
  try {
    kvmInfo('/nonexistent/kvm');
  } catch (error) {
    expect((error as KvmkitError).code).toBe('KVM_NOT_FOUND');
    expect((error as Error).message).toMatch(/does not exist.*Load the kvm module/);
  }
});

it('reports a device that is not KVM', () => {
  expect(() => Machine.create({ memory: '1M', kvmPath: '/dev/null' })).toThrow(
    expect.objectContaining({ code: 'KVM_API_VERSION' }),
  );
});

describeKvm('the host KVM', () => {
  it('speaks API version 12 and reports its limits', () => {
    const info = kvmInfo();
    expect(info.apiVersion).toBe(12);
    expect(info.maxVcpus).toBeGreaterThanOrEqual(1);
    expect(info.maxMemslots).toBeGreaterThan(1);
  });
});
