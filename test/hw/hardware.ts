/**
 * Gating for the tests that need hardware virtualization (VT-x or AMD-V behind /dev/kvm):
 * `npm run test:hw` runs them in the test machine (scripts/hwvm.sh) on hosts without it.
 * With CI=true they run everywhere and fail where KVM is not hardware virtualization.
 */
import { beforeAll, describe } from 'vitest';
import { hardwareVirtualization } from '../../src/index.js';
import { inCi } from '../kvm.js';

const hardware = hardwareVirtualization();

/** `describe` for suites that need hardware virtualization; fails them in CI without it. */
export function describeHw(name: string, suite: () => void): void {
  (hardware || inCi ? describe : describe.skip)(name, () => {
    beforeAll(() => {
      if (!hardware) {
        throw new Error(
          "this host's KVM is not hardware virtualization (no vmx/svm flag in /proc/cpuinfo): " +
            'run the hardware tests with `npm run test:hw`, which runs them in the test machine',
        );
      }
    });
    suite();
  });
}
