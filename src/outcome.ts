/**
 * How a run ends.
 * @module
 */
import { MachineError, type MachineErrorCode } from './errors.js';
import type { NativeOutcome } from './native.js';

/** Why a machine's run ended: check `reason`, then the fields that reason carries. */
export type Outcome =
  | {
      /** `halted`: every vCPU executed `hlt`; `stopped`: the host stopped the run ({@link Machine.stop}, close). */
      readonly reason: 'halted' | 'stopped';
    }
  | {
      /** `triple-fault`: the guest triple-faulted; `shutdown`, `reset`, `crash`: it asked the platform to. */
      readonly reason: 'triple-fault' | 'shutdown' | 'reset' | 'crash';
      /** The vCPU it happened on. */
      readonly vcpu: number;
    }
  | {
      /** Another `KVM_EXIT_SYSTEM_EVENT` type. */
      readonly reason: 'system-event';
      /** The vCPU it happened on. */
      readonly vcpu: number;
      /** The event type. */
      readonly type: number;
    }
  | {
      /** A device asked to end the run, such as the debug-exit port. */
      readonly reason: 'device-request';
      /** The device's name. */
      readonly device: string;
      /** The status the guest gave it. */
      readonly status: number;
    }
  | {
      /** The run stopped because of an error. */
      readonly reason: 'error';
      /** What went wrong, where. */
      readonly error: MachineError;
    };

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
