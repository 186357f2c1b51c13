/**
 * Checking the host's KVM.
 * @module
 */
import { callNative, KvmkitError } from './errors.js';
import { type CpuidEntry, native } from './native.js';

/** What the host's KVM reports about itself. */
export interface KvmInfo {
  /** The device node that was opened. */
  readonly path: string;
  /** `KVM_GET_API_VERSION` (always 12 on a usable host). */
  readonly apiVersion: number;
  /** The recommended maximum of vCPUs per VM (`KVM_CAP_NR_VCPUS`). */
  readonly recommendedVcpus: number;
  /** The hard maximum of vCPUs per VM (`KVM_CAP_MAX_VCPUS`). */
  readonly maxVcpus: number;
  /** The maximum of memory regions per VM (`KVM_CAP_NR_MEMSLOTS`). */
  readonly maxMemslots: number;
  /** Bytes of the `kvm_run` area mapped per vCPU. */
  readonly vcpuMmapSize: number;
  /** The KVM capabilities kvmkit uses that the host has, by name (`KVM_CAP_IRQCHIP`, …). */
  readonly capabilities: readonly string[];
  /** The optional ones it lacks, with what cannot work without each. */
  readonly missing: readonly MissingCapability[];
}

/** An optional KVM capability the host lacks. */
export interface MissingCapability {
  /** Its name, such as `KVM_CAP_IRQCHIP`. */
  readonly name: string;
  /** What kvmkit cannot do without it. */
  readonly needs: string;
}

/**
 * Opens the KVM device (default `/dev/kvm`), checks its API version and capabilities, and reports its limits.
 * @example
 * ```ts
 * const { maxVcpus } = kvmInfo(); // throws KVM_NOT_FOUND or KVM_PERMISSION_DENIED, saying what to do
 * ```
 */
export function kvmInfo(path?: string): KvmInfo {
  const info = callNative(() => native().kvmInfo(path));
  return { ...info, missing: info.missing.map(([name = '', needs = '']) => ({ name, needs })) };
}

/** The CPUID leaves the host's KVM can present to guests (`KVM_GET_SUPPORTED_CPUID`). */
export function supportedCpuid(path?: string): CpuidEntry[] {
  return callNative(() => native().supportedCpuid(path));
}

/** Whether KVM is usable here, and if not, why and what to do. */
export type KvmAvailability =
  | {
      /** KVM is usable. */
      readonly ok: true;
      /** Its limits. */
      readonly info: KvmInfo;
    }
  | {
      /** KVM is not usable. */
      readonly ok: false;
      /** Why, with what to do about it in the message. */
      readonly error: KvmkitError;
    };

/** Checks KVM without throwing. */
export function kvmAvailability(path?: string): KvmAvailability {
  try {
    return { ok: true, info: kvmInfo(path) };
  } catch (error) {
    const e = error instanceof KvmkitError ? error : new KvmkitError('KVM_OPEN_FAILED', String(error));
    return { ok: false, error: e };
  }
}
