/**
 * Loads the native binding: the local build in a checkout, or the platform package
 * (`kvmkit-linux-x64-gnu`) when installed from npm.
 * @module
 */
import { createRequire } from 'node:module';
import { KvmkitError } from './errors.js';

export type * from '../native/index.cjs';

type Binding = typeof import('../native/index.cjs');

let binding: Binding | undefined;

/** The native binding, loaded on first use. */
export function native(): Binding {
  if (binding === undefined) {
    const require = createRequire(import.meta.url);
    try {
      binding = require('../native/index.cjs') as Binding;
    } catch (error) {
      throw new KvmkitError(
        'NATIVE_BINDING_MISSING',
        'the kvmkit native addon could not be loaded: kvmkit runs on Linux x64 (glibc) and ' +
          'needs its platform package kvmkit-linux-x64-gnu (reinstall without ' +
          '--no-optional), or a local build (npm run build) in a checkout',
        { cause: error },
      );
    }
  }
  return binding;
}
