/**
 * How a run ends.
 * @module
 */
import { MachineError, type MachineErrorCode } from './errors.js';
import type { NativeOutcome } from './native.js';

/** Why a machine's run ended. */
export type Outcome =
  /** Every vCPU executed `hlt`. */
  | { readonly reason: 'halted' }
  /** The host stopped the machine ({@link Machine.stop} or close). */
  | { readonly reason: 'stopped' }
  /** The guest triple-faulted on `vcpu`. */
  | { readonly reason: 'triple-fault'; readonly vcpu: number }
  /** The guest asked the platform to power off, reset, or reported a crash. */
  | { readonly reason: 'shutdown' | 'reset' | 'crash'; readonly vcpu: number }
  /** Another `KVM_EXIT_SYSTEM_EVENT` type. */
  | { readonly reason: 'system-event'; readonly vcpu: number; readonly type: number }
  /** A device asked to end the run, such as the debug-exit port, with the guest's status. */
  | { readonly reason: 'device-request'; readonly device: string; readonly status: number }
  /** The run stopped because of an error. */
  | { readonly reason: 'error'; readonly error: MachineError };

/** Converts the native outcome; `cause` is a handler's own exception, when one ended the run. */
export function toOutcome(o: NativeOutcome, cause?: unknown): Outcome {
  const vcpu = o.vcpu ?? 0;
  switch (o.reason) {
    case 'halted':
    case 'stopped':
      return { reason: o.reason };
    case 'triple-fault':
    case 'shutdown':
    case 'reset':
    case 'crash':
      return { reason: o.reason, vcpu };
    case 'system-event':
      return { reason: 'system-event', vcpu, type: o.status ?? 0 };
    case 'device-request':
      return { reason: 'device-request', device: o.device ?? '', status: o.status ?? 0 };
    default: {
      const details = {
        vcpu,
        exit: o.exit ?? 'other',
        instruction: new Uint8Array(o.instruction ?? []),
        ...(o.rip === undefined ? {} : { rip: o.rip }),
      };
      const options = cause === undefined ? undefined : { cause };
      const code = (o.code ?? 'INTERNAL_ERROR') as MachineErrorCode;
      return { reason: 'error', error: new MachineError(code, o.message ?? o.reason, details, options) };
    }
  }
}
