/**
 * Checking the host's KVM.
 * @module
 */
import { callNative, KvmkitError } from './errors.js';
import { type KvmInfo, native } from './native.js';

export type { KvmInfo } from './native.js';

/** Opens the KVM device (default `/dev/kvm`), checks its API version and capabilities, and reports its limits. */
export function kvmInfo(path?: string): KvmInfo {
  return callNative(() => native().kvmInfo(path));
}

/** Whether KVM is usable here, and if not, why and what to do. */
export type KvmAvailability = { readonly ok: true; readonly info: KvmInfo } | { readonly ok: false; readonly error: KvmkitError };

/** Checks KVM without throwing. */
export function kvmAvailability(path?: string): KvmAvailability {
  try {
    return { ok: true, info: kvmInfo(path) };
  } catch (error) {
    const e = error instanceof KvmkitError ? error : new KvmkitError('KVM_OPEN_FAILED', String(error));
    return { ok: false, error: e };
  }
}
