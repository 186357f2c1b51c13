/**
 * The errors kvmkit throws. Every one is a {@link KvmkitError} with a stable `code`.
 * @module
 */

/** Stable codes of {@link KvmkitError}. */
export type ErrorCode =
  | 'KVM_NOT_FOUND'
  | 'KVM_PERMISSION_DENIED'
  | 'KVM_OPEN_FAILED'
  | 'KVM_API_VERSION'
  | 'KVM_MISSING_CAPABILITY'
  | 'KVM_IOCTL_FAILED'
  | 'INVALID_CONFIG'
  | 'INVALID_ARGUMENT'
  | 'NO_IRQCHIP'
  | 'MEMORY_MAP_FAILED'
  | 'GUEST_MEMORY_RANGE'
  | 'BUS_RANGE'
  | 'NO_SUCH_VCPU'
  | 'INVALID_STATE'
  | 'NOT_WAITING'
  | 'REPLY_TOO_LONG'
  | 'THREAD_FAILED'
  | 'EVENTFD_FAILED'
  | 'DEVICE_FAILED'
  | 'BAD_IMAGE'
  | 'TAP_NOT_FOUND'
  | 'TAP_PERMISSION_DENIED'
  | 'TAP_FAILED'
  | 'VHOST_UNAVAILABLE'
  | 'VHOST_FAILED'
  | 'VHOST_IN_KERNEL'
  | 'VSOCK_CID_IN_USE'
  | 'BAD_DISK'
  | 'NATIVE_BINDING_MISSING'
  | 'INTERNAL_PANIC'
  | 'PORT_IN_USE'
  | 'CONNECTION_REFUSED'
  | 'CONNECTION_TIMED_OUT'
  | MachineErrorCode;

/** Codes of the errors that end a run ({@link MachineError}). */
export type MachineErrorCode =
  | 'UNHANDLED_EXIT'
  | 'HANDLER_FAILED'
  | 'EMULATION_FAILURE'
  | 'INTERNAL_ERROR'
  | 'FAIL_ENTRY'
  | 'KVM_RUN_FAILED';

/**
 * Base class of every error kvmkit throws or reports.
 * @example
 * ```ts
 * try {
 *   vm.memory.writeU8(0x1000, 300);
 * } catch (error) {
 *   if (error instanceof KvmkitError && error.code === 'INVALID_ARGUMENT') console.error(error.message); // value: expected …
 * }
 * ```
 */
export class KvmkitError extends Error {
  /** A stable, machine-readable code. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'KvmkitError';
    this.code = code;
  }
}

/** A configuration value is missing, of the wrong type, or out of range. */
export class ConfigError extends KvmkitError {
  /** The path of the offending field, such as `memory[1].size`. */
  readonly field: string;
  /** What is wrong with it and what to do, without the field's name. */
  readonly reason: string;

  constructor(field: string, reason: string) {
    super('INVALID_CONFIG', `invalid config: ${field}: ${reason}`);
    this.name = 'ConfigError';
    this.field = field;
    this.reason = reason;
  }
}

/**
 * An argument of a method is of the wrong type or out of range (code `INVALID_ARGUMENT`):
 * the message names the argument, the value as given and what is expected.
 */
export class ArgumentError extends KvmkitError {
  /** The argument's name, such as `address` or `device.name`. */
  readonly argument: string;

  constructor(argument: string, message: string) {
    super('INVALID_ARGUMENT', `${argument}: ${message}`);
    this.name = 'ArgumentError';
    this.argument = argument;
  }
}

/** Why a machine stopped with an error: the exit, the vCPU, and where the guest was. */
export class MachineError extends KvmkitError {
  /** The vCPU the error happened on. */
  readonly vcpu: number;
  /** The exit that caused it, such as `io-out` or `internal-error`. */
  readonly exit: string;
  /** The guest's instruction pointer, when it could be read. */
  readonly rip: bigint | undefined;
  /** The instruction bytes at `rip` (up to 15), when they could be read. */
  readonly instruction: Uint8Array;

  constructor(
    code: MachineErrorCode,
    message: string,
    details: { vcpu: number; exit: string; rip?: bigint; instruction?: Uint8Array },
    options?: ErrorOptions,
  ) {
    super(code, message, options);
    this.name = 'MachineError';
    this.vcpu = details.vcpu;
    this.exit = details.exit;
    this.rip = details.rip;
    this.instruction = details.instruction ?? new Uint8Array();
  }
}

const CONFIG_MESSAGE = /^invalid config: ([^:]+): (.*)$/s;

/** Converts an error thrown by the native binding into a typed kvmkit error. */
export function fromNative(error: unknown): Error {
  if (!(error instanceof Error)) {
    return new KvmkitError('INTERNAL_PANIC', String(error));
  }
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string') {
    return error;
  }
  if (code === 'INVALID_CONFIG') {
    const m = CONFIG_MESSAGE.exec(error.message);
    if (m?.[1] !== undefined && m[2] !== undefined) {
      return new ConfigError(m[1], m[2]);
    }
  }
  // A Rust panic caught at the boundary arrives with napi's generic status.
  const known = code === 'GenericFailure' ? 'INTERNAL_PANIC' : (code as ErrorCode);
  return new KvmkitError(known, error.message, { cause: error });
}

/** Runs `f`, converting native errors into typed kvmkit errors. */
export function callNative<T>(f: () => T): T {
  try {
    return f();
  } catch (error) {
    throw fromNative(error);
  }
}
