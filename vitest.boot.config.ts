import { defineConfig } from 'vitest/config';

// The boot stage: Debian's kernel on real KVM. Slow on software-assisted hosts, so it is
// not part of the fast stage (`npm run test:js`); run it with `npm run test:boot`.
export default defineConfig({
  test: {
    include: ['test/boot/**/*.test.ts'],
    testTimeout: 900_000,
    hookTimeout: 60_000,
  },
});
