import { defineConfig } from 'vitest/config';

// The hardware stage: tests that need VT-x/AMD-V behind /dev/kvm. `npm run test:hw` runs it
// through scripts/hwvm.sh: directly where the host has them, else in the test machine (an
// L1 under QEMU TCG, slow), hence the long timeouts and one test file at a time.
export default defineConfig({
  test: {
    include: ['test/hw/**/*.test.ts'],
    testTimeout: 900_000,
    hookTimeout: 120_000,
    fileParallelism: false,
  },
});
