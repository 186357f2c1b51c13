/**
 * Gating for tests that need /dev/kvm: in CI they must run (and fail if KVM is unusable);
 * elsewhere they are skipped with the reason and the fix.
 */
import { describe } from 'vitest';
import { kvmAvailability } from '../src/kvm.js';

export const kvm = kvmAvailability();
export const inCi = process.env.CI === 'true' || process.env.CI === '1';

if (!kvm.ok && !inCi) {
  console.warn(
    `Skipping the tests that need KVM: ${kvm.error.message}. ` +
      'They run wherever /dev/kvm is present and read-write for your user (check with `ls -l /dev/kvm`).',
  );
}

/** `describe` for suites that need KVM. */
export const describeKvm = kvm.ok || inCi ? describe : describe.skip;
