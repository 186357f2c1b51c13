/**
 * A virtual machine: RAM, vCPUs, devices, and the run's lifecycle.
 * @module
 */
import { EventEmitter } from 'node:events';
import { DeviceBus } from './bus.js';
import { type MachineConfig, resolveConfig } from './config.js';
import type { Device, DeviceHandle } from './devices.js';
import { callNative, KvmkitError } from './errors.js';
import { GuestMemory } from './memory.js';
import { type NativeEvent, type NativeMachine, native } from './native.js';
import { type Outcome, toOutcome } from './outcome.js';
import type { VcpuStats } from './stats.js';
import { Vcpu } from './vcpu.js';

/** `NativeEvent.type` values. */
const EVENT_ACCESS = 0;
const EVENT_PAUSED = 1;

/** The lifecycle state of a {@link Machine}. */
export type MachineState = 'created' | 'running' | 'paused' | 'ended' | 'closed';

/** Events a {@link Machine} emits. Nobody listening costs nothing on the exit path. */
export interface MachineEvents {
  /** The vCPU threads started. */
  start: [];
  /** Every vCPU stopped at a pause point. */
  paused: [];
  /** The vCPUs run again. */
  resumed: [];
  /** The run ended. */
  end: [outcome: Outcome];
}

/** The built-in debug console (Bochs/QEMU `-debugcon` style), answered in Rust. */
export interface DebugConsole {
  /** The port it listens on. */
  readonly port: number;
  /** Takes the bytes the guest wrote since the last call (at most 1 MiB are kept); works after close too. */
  take(): Uint8Array;
}

/**
 * A KVM virtual machine.
 *
 * ```ts
 * await using vm = Machine.create({ memory: '2M' });
 * vm.memory.write(0x1000, code);
 * vm.vcpus[0].setup({ mode: 'real', entry: 0x1000 });
 * vm.addPortDevice(0x3f8, 8, { name: 'uart', write: (_a, v) => process.stdout.write(String.fromCharCode(Number(v))) });
 * const outcome = await vm.run();
 * ```
 *
 * Each vCPU runs `KVM_RUN` on its own thread. Accesses to TypeScript devices are handed to
 * this thread's event loop; Rust built-in devices answer on the vCPU thread itself.
 */
export class Machine extends EventEmitter<MachineEvents> implements AsyncDisposable {
  readonly #native: NativeMachine;
  readonly #bus: DeviceBus;
  #outcome: Outcome | undefined;
  readonly #ended: Promise<Outcome>;
  #resolveEnded!: (outcome: Outcome) => void;
  #pauseWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];

  /** Guest RAM. */
  readonly memory: GuestMemory;
  /** The vCPUs, by index. */
  readonly vcpus: readonly Vcpu[];

  private constructor(nativeMachine: NativeMachine, handlerTimeoutMs: number) {
    super();
    this.#native = nativeMachine;
    this.#bus = new DeviceBus(nativeMachine, handlerTimeoutMs);
    this.memory = new GuestMemory(nativeMachine);
    this.vcpus = Array.from({ length: nativeMachine.vcpuCount }, (_, i) => new Vcpu(nativeMachine, i));
    this.#ended = new Promise((resolve) => {
      this.#resolveEnded = resolve;
    });
  }

  /**
   * Creates a machine: opens KVM, creates the VM, maps guest RAM and creates the vCPUs.
   * Throws {@link ConfigError} for bad configuration (naming the field and the limit) and a
   * {@link KvmkitError} when KVM is missing or inaccessible (saying how to fix it).
   */
  static create(config: MachineConfig): Machine {
    const resolved = resolveConfig(config);
    const nativeMachine = callNative(() => new (native().NativeMachine)(resolved.native));
    return new Machine(nativeMachine, resolved.handlerTimeoutMs);
  }

  /** The lifecycle state. */
  get state(): MachineState {
    return this.#native.state as MachineState;
  }

  /** The outcome, once the run has ended. */
  get outcome(): Outcome | undefined {
    return this.#outcome;
  }

  /** Registers a TypeScript device on `length` I/O ports from `base`. */
  addPortDevice(base: number, length: number, device: Device): DeviceHandle {
    return this.#bus.add('port', base, length, device);
  }

  /** Registers a TypeScript device on the MMIO range `base..base+length` (outside guest RAM). */
  addMmioDevice(base: number, length: number, device: Device): DeviceHandle {
    return this.#bus.add('mmio', base, length, device);
  }

  /** Adds the Rust debug console on `port` (default 0xe9): writes are collected, reads return 0xe9. */
  addDebugConsole(port = 0xe9): DebugConsole {
    callNative(() => this.#native.addBuiltin('debug-console', port, 1, 0));
    return { port, take: () => new Uint8Array(this.#native.takeConsoleOutput()) };
  }

  /** Adds the Rust debug-exit port (default 0xf4): a write ends the run with a `device-request` outcome carrying the value. */
  addDebugExit(port = 0xf4): void {
    callNative(() => this.#native.addBuiltin('debug-exit', port, 1, 0));
  }

  /** Adds a Rust null device on `length` ports from `base`: reads return `fill` in every byte, writes are dropped. */
  addNullDevice(base: number, length: number, fill = 0xff): void {
    callNative(() => this.#native.addBuiltin('null', base, length, fill));
  }

  /** Starts the vCPU threads. */
  start(): void {
    callNative(() => this.#native.start((e) => this.#onEvent(e)));
    this.emit('start');
  }

  /** Starts the machine and waits for the run to end. */
  run(): Promise<Outcome> {
    this.start();
    return this.wait();
  }

  /** Resolves with the outcome when the run ends. */
  wait(): Promise<Outcome> {
    return this.#ended;
  }

  /** Pauses every vCPU; resolves once all have stopped running guest code. */
  pause(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#pauseWaiters.push({ resolve, reject });
      try {
        callNative(() => this.#native.pause());
      } catch (error) {
        this.#pauseWaiters.pop();
        reject(error);
      }
    });
  }

  /** Lets a paused machine run again. */
  resume(): void {
    callNative(() => this.#native.resume());
    this.emit('resumed');
  }

  /** Stops the run (the outcome becomes `stopped` unless the guest ended first). Does not wait: use {@link wait}. */
  stop(): void {
    this.#native.stop();
  }

  /** Exit counters and latency of every vCPU. */
  stats(): VcpuStats[] {
    return this.vcpus.map((v) => v.stats());
  }

  /** Stops the run, joins the vCPU threads and releases the VM. Safe to call more than once and during a run. */
  async close(): Promise<void> {
    const wasStarted = this.state !== 'created' && this.state !== 'closed';
    this.#native.close();
    if (wasStarted) {
      await this.#ended;
    }
  }

  /** Closes the machine: `await using vm = Machine.create(...)`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #onEvent(e: NativeEvent): void {
    if (e.type === EVENT_ACCESS) {
      this.#bus.dispatch(e);
    } else if (e.type === EVENT_PAUSED) {
      for (const w of this.#pauseWaiters.splice(0)) {
        w.resolve();
      }
      this.emit('paused');
    } else if (e.outcome !== undefined) {
      const outcome = toOutcome(e.outcome, this.#bus.failure);
      this.#outcome = outcome;
      for (const w of this.#pauseWaiters.splice(0)) {
        w.reject(new KvmkitError('INVALID_STATE', `cannot pause: the run ended (${outcome.reason})`));
      }
      this.#resolveEnded(outcome);
      this.emit('end', outcome);
    }
  }
}
