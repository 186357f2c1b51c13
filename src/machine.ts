/**
 * A virtual machine: RAM, vCPUs, devices, and the run's lifecycle.
 * @module
 */
import { EventEmitter } from 'node:events';
import { type MachineConfig, resolveConfig } from './config.js';
import type { Device, DeviceHandle } from './devices.js';
import { ArgumentError, callNative, fromNative, KvmkitError } from './errors.js';
import { describeAccess, Handoff, type SlotRecord } from './handoff.js';
import type { IoEventFd, IoEventFdOptions, IrqFd } from './irq.js';
import * as interrupts from './irq.js';
import type { FlatBinaryOptions, LoadedKernel, LoadedMultiboot, LoadLinuxOptions, MultibootModule } from './loaders.js';
import * as loaders from './loaders.js';
import { GuestMemory } from './memory.js';
import { type NativeBuiltin, type NativeEvent, type NativeMachine, type NativeOutcome, native } from './native.js';
import { type Outcome, toOutcome } from './outcome.js';
import { type SerialOptions, SerialPort } from './serial.js';
import type { VcpuStats } from './stats.js';
import { deviceArgs, oneOf, wholeNumber } from './validate.js';
import { Vcpu } from './vcpu.js';
import { VirtioConsole } from './virtio/console.js';
import { addDisk, type Disk, type DiskOptions } from './virtio/disk.js';
import { addNet, type NetDevice, type NetOptions } from './virtio/net.js';
import { Vsock, type VsockOptions, vsockOptions } from './virtio/vsock.js';

/** The lifecycle state of a {@link Machine}. */
export type MachineState = 'created' | 'running' | 'paused' | 'ended' | 'closed';

/** An access to a TypeScript device, as the `access` event reports it. */
export interface AccessEvent {
  /** The vCPU that made it. */
  readonly vcpu: number;
  /** The name of the device it reached. */
  readonly device: string;
  /** `read` or `write`. */
  readonly kind: 'read' | 'write';
  /** `port` or `mmio`. */
  readonly space: 'port' | 'mmio';
  /** The port or guest-physical address. */
  readonly address: number;
  /** Width in bytes. */
  readonly size: number;
  /** Repeat count of string I/O, 1 otherwise. */
  readonly count: number;
}

/** Events a {@link Machine} emits. Nobody listening costs nothing on the exit path. */
export interface MachineEvents {
  /** The vCPU threads started. */
  start: [];
  /** A TypeScript device is about to handle a guest access (emitted only while someone listens). */
  access: [access: AccessEvent];
  /** Every vCPU stopped at a pause point. */
  paused: [];
  /** The vCPUs run again. */
  resumed: [];
  /**
   * A virtio device stopped working: the guest's driver broke one of its rings or gave it
   * something it refuses (`message` says what). The device set `DEVICE_NEEDS_RESET` and
   * serves nothing until the driver resets it; the run and the other devices go on.
   */
  'device-error': [error: DeviceError];
  /** The run ended. */
  end: [outcome: Outcome];
}

/** Why a virtio device stopped working (the {@link MachineEvents} `device-error` event). */
export interface DeviceError {
  /** The device: `virtio-rng`, `virtio-blk`, … */
  readonly device: string;
  /** Where its register window is. */
  readonly base: number;
  /** What the driver did. */
  readonly message: string;
}

/** Where a built-in device sits. */
export interface BuiltinDevice {
  /** Its name on the bus: `debug-exit`, `i8042`, `rtc`, `null`. */
  readonly name: string;
  /** `port` or `mmio`. */
  readonly space: 'port' | 'mmio';
  /** Its first port or address. */
  readonly base: number;
  /** How many ports or bytes it occupies. */
  readonly length: number;
}

/** Where a virtio device sits: its virtio-mmio register window and its interrupt line. */
export interface VirtioDeviceInfo extends BuiltinDevice {
  /** `virtio-rng`, `virtio-blk`, … */
  readonly name: string;
  readonly space: 'mmio';
  /** Its interrupt line (GSI), edge-triggered. */
  readonly irq: number;
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
 * vm.vcpu(0).setup({ mode: 'real', entry: 0x1000 });
 * vm.addPortDevice(0x3f8, 8, { name: 'uart', write: (_a, v) => process.stdout.write(String.fromCharCode(Number(v))) });
 * const outcome = await vm.run();
 * ```
 *
 * Each vCPU runs `KVM_RUN` on its own thread. Accesses to TypeScript devices are handed to
 * this thread's event loop; Rust built-in devices answer on the vCPU thread itself.
 */
export class Machine extends EventEmitter<MachineEvents> implements AsyncDisposable {
  readonly #native: NativeMachine;
  readonly #handoff: Handoff;
  readonly #irqchip: boolean;
  /**
   * Devices whose output is announced by an output event: UARTs by port, virtio devices by
   * MMIO base. `end` tells them, once, that the run ended (`why` says how).
   */
  readonly #outputs = new Map<number, { drain(): void; end(why: string): void }>();
  #outcome: Outcome | undefined;
  readonly #ended: Promise<Outcome>;
  #resolveEnded!: (outcome: Outcome) => void;
  #pauseWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  #qemuDebugExit = false;

  /** Guest RAM. */
  readonly memory: GuestMemory;
  /** The vCPUs, by index ({@link Machine.vcpu} throws for a missing one instead of giving `undefined`). */
  readonly vcpus: readonly Vcpu[];

  private constructor(nativeMachine: NativeMachine, handlerTimeoutMs: number, spinMicros: number, irqchip: boolean) {
    super();
    this.#native = nativeMachine;
    this.#irqchip = irqchip;
    this.#handoff = new Handoff(nativeMachine, {
      timeoutMs: handlerTimeoutMs,
      spinMicros,
      observe: (r, device) => this.#observe(r, device),
    });
    // The hand-off reads a flag on every access instead of asking the emitter (a keyed
    // lookup) each time; Node announces every listener added and removed (events that
    // MachineEvents, which lists the machine's own, leaves out).
    (this as EventEmitter).on('newListener', (event: string | symbol) => {
      if (event === 'access') {
        this.#handoff.observing = true;
      }
    });
    (this as EventEmitter).on('removeListener', (event: string | symbol) => {
      if (event === 'access') {
        this.#handoff.observing = this.listenerCount('access') > 0;
      }
    });
    this.memory = new GuestMemory(callNative(() => nativeMachine.memory()));
    this.vcpus = Array.from(
      { length: nativeMachine.vcpuCount },
      (_, i) => new Vcpu(nativeMachine.vcpu(i), i, this.memory.regions),
    );
    this.#ended = new Promise((resolve) => {
      this.#resolveEnded = resolve;
    });
  }

  /**
   * Creates a machine: opens KVM, creates the VM, maps guest RAM and creates the vCPUs.
   * Throws {@link ConfigError} for bad configuration (naming the field and the limit) and a
   * {@link KvmkitError} when KVM is missing or inaccessible (saying how to fix it).
   * @example
   * ```ts
   * const vm = Machine.create({ memory: '64M', vcpus: 2, irqchip: true });
   * const big = Machine.create({ memory: [{ guestAddr: 0, size: '3G' }, { guestAddr: 2 ** 32, size: '1G' }] });
   * ```
   */
  static create(config: MachineConfig): Machine {
    const resolved = resolveConfig(config);
    const nativeMachine = callNative(() => new (native().NativeMachine)(resolved.native));
    return new Machine(nativeMachine, resolved.handlerTimeoutMs, resolved.eventLoopSpinMicros, resolved.native.irqchip);
  }

  /** An id that {@link stopMachine} accepts from any thread (a worker running {@link runInline}, say). */
  get id(): number {
    return this.#native.id;
  }

  /** The lifecycle state. */
  get state(): MachineState {
    return this.#native.state as MachineState;
  }

  /** The outcome, once the run has ended. */
  get outcome(): Outcome | undefined {
    return this.#outcome;
  }

  /**
   * vCPU `index`. Throws `NO_SUCH_VCPU`, naming how many vCPUs the machine has, when there is
   * no such vCPU ({@link Machine.vcpus} gives `undefined` there).
   * @example
   * ```ts
   * vm.vcpu(0).setup({ mode: 'long', entry: 0x1000, stack: 0x8_0000 });
   * ```
   */
  vcpu(index: number): Vcpu {
    wholeNumber(index, 'index', 0, Number.MAX_SAFE_INTEGER);
    const vcpu = this.vcpus[index];
    if (vcpu === undefined) {
      throw new KvmkitError(
        'NO_SUCH_VCPU',
        `vCPU ${index} does not exist: this machine has ${this.vcpus.length} vCPU(s), 0 to ${this.vcpus.length - 1}`,
      );
    }
    return vcpu;
  }

  /**
   * Registers a TypeScript device on `length` I/O ports from `base`.
   * @example
   * ```ts
   * vm.addPortDevice(0x3f8, 8, { name: 'uart', write: (_access, value) => process.stdout.write(String.fromCharCode(Number(value))) });
   * ```
   */
  addPortDevice(base: number, length: number, device: Device): DeviceHandle {
    deviceArgs('port', base, length, device);
    return this.#handoff.add('port', base, length, device);
  }

  /** Registers a TypeScript device on the MMIO range `base..base+length` (outside guest RAM). */
  addMmioDevice(base: number, length: number, device: Device): DeviceHandle {
    deviceArgs('mmio', base, length, device);
    return this.#handoff.add('mmio', base, length, device);
  }

  /**
   * Loads a Linux kernel — an ELF vmlinux or a bzImage — with an optional initrd and a
   * command line, and sets vCPU 0 up to enter it (through PVH where the kernel has the
   * entry note, otherwise through the 64-bit boot protocol). The e820 map follows guest
   * RAM; ACPI tables (CPUs, IOAPIC, the UARTs added so far, power-off) and an MP table
   * describe the machine. A bad image or initrd throws `BAD_IMAGE` naming the file and
   * what is wrong, before anything is loaded. See also {@link createLinuxMachine}.
   */
  loadLinux(kernel: string, initrd: string | undefined, cmdline: string, options: LoadLinuxOptions = {}): LoadedKernel {
    return loaders.loadLinux(this.#native, kernel, initrd, cmdline, options);
  }

  /**
   * Loads a Multiboot (v1) kernel — a 32-bit ELF, or an image whose header gives its load
   * addresses, as QEMU's `-kernel` takes them — with its command line and modules, and
   * sets vCPU 0 up to enter it in 32-bit protected mode (EAX = 0x2BADB002, EBX = the
   * multiboot information with memory sizes, memory map, command line and modules).
   */
  loadMultiboot(kernel: string, cmdline = '', modules: readonly MultibootModule[] = []): LoadedMultiboot {
    return loaders.loadMultiboot(this.#native, kernel, cmdline, modules);
  }

  /**
   * Loads a raw flat binary at `options.address` and sets vCPU 0 up to enter it; returns
   * the address just past it. An empty file, or one that does not fit in guest RAM, throws
   * `BAD_IMAGE`.
   */
  loadFlat(path: string, options: FlatBinaryOptions): number {
    return loaders.loadFlat(this.#native, path, options);
  }

  /**
   * Adds a 16550A UART, answered in Rust, whose byte streams are Node streams: COM1 (0x3f8,
   * with IRQ 4 on a machine with `irqchip`) unless `options` say otherwise. The ACPI tables
   * and the MP table a Linux kernel is loaded with list it.
   */
  addSerial(options: SerialOptions = {}): SerialPort {
    const { port, irq = this.#irqchip ? native().COM1_IRQ : null } = options;
    if (port !== undefined) {
      wholeNumber(port, 'options.port', 0, 0xfff8);
    }
    if (irq !== null) {
      wholeNumber(irq, 'options.irq', 0, 23);
    }
    const serial = new SerialPort(callNative(() => this.#native.addSerial(port, irq ?? undefined)));
    this.#outputs.set(serial.port, serial);
    return serial;
  }

  /**
   * Adds a Rust debug console on `port` (default 0xe9): writes are collected, reads return
   * 0xe9. Each console added keeps its own output.
   */
  addDebugConsole(port?: number): DebugConsole {
    if (port !== undefined) {
      wholeNumber(port, 'port', 0, 0xffff);
    }
    const console = callNative(() => this.#native.addDebugConsole(port));
    return { port: console.port, take: () => new Uint8Array(console.take()) };
  }

  /**
   * Adds the Rust debug-exit port (default 0xf4, 4 ports wide so 1-, 2- and 4-byte writes
   * reach it): a write ends the run with a `device-request` outcome whose `status` is the
   * value written (`convention: 'raw'`, the default) or, as QEMU's `isa-debug-exit` exits,
   * `(value << 1) | 1` (`convention: 'qemu'`, for tests ported from QEMU that check the status).
   * @example
   * ```ts
   * vm.addDebugExit(0xf4, { convention: 'qemu' });
   * const outcome = await vm.run(); // the guest wrote 0 to port 0xf4: { reason: 'device-request', device: 'debug-exit', status: 1 }
   * ```
   */
  addDebugExit(port?: number, options: { convention?: 'raw' | 'qemu' } = {}): BuiltinDevice {
    if (port !== undefined) {
      wholeNumber(port, 'port', 0, 0xffff);
    }
    const convention = oneOf(options.convention ?? 'raw', 'options.convention', ['raw', 'qemu'] as const);
    const device = this.#builtin({ kind: 'debug-exit', ...(port === undefined ? {} : { base: port }) });
    this.#qemuDebugExit = convention === 'qemu';
    return device;
  }

  /** Adds the i8042 keyboard controller at 0x60–0x64 (Rust): its reset command ends the run with a `reset` outcome. */
  addI8042(): BuiltinDevice {
    return this.#builtin({ kind: 'i8042' });
  }

  /**
   * Adds a virtio entropy device (virtio-rng, `/dev/hwrng` in a Linux guest) fed from the
   * host's `getrandom(2)`. Like every virtio device it sits on the virtio-mmio transport, in
   * a page of the 32-bit MMIO hole with its own interrupt line, is served on the machine's
   * I/O thread (never on a vCPU thread or Node's event loop), and is described to a Linux
   * guest in the ACPI tables if added before {@link loadLinux}. Needs `irqchip: true`.
   *
   * @example
   * ```ts
   * const vm = Machine.create({ memory: '256M', irqchip: true });
   * const rng = vm.addRng(); // { name: 'virtio-rng', base: 0xc0000000, irq: 5, … }
   * ```
   */
  addRng(): VirtioDeviceInfo {
    return callNative(() => this.#native.addRng());
  }

  /**
   * Adds a virtio-blk disk: an image file, a `Uint8Array`, or a {@link BlockBackend} of your
   * own. An image is served on the machine's I/O thread with `preadv`/`pwritev` (flush,
   * discard and write-zeroes included), read-only if you say so, or under a copy-on-write
   * overlay so many machines share one image; a memory disk or a backend is served by your
   * code, with requests in batches and buffers as views of guest memory. Add disks before
   * {@link loadLinux} so the ACPI tables name them (`/dev/vda`, `/dev/vdb`… in that order).
   * Needs `irqchip: true`. A missing or unusable image throws `BAD_DISK`.
   *
   * @example
   * ```ts
   * const vm = Machine.create({ memory: '512M', irqchip: true });
   * vm.addDisk({ path: 'debian.img', overlay: true }); // the image is never written
   * vm.addDisk({ path: 'data.img', readOnly: true, serial: 'data' });
   * const scratch = new Uint8Array(64 << 20);
   * vm.addDisk({ data: scratch }); // the guest's writes land in `scratch`
   * ```
   */
  addDisk(options: DiskOptions): Disk {
    return addDisk(this.#native, this.memory, options);
  }

  /**
   * Adds a virtio console with one port (`hvc0` in a Linux guest: boot with `console=hvc0`
   * to make it the kernel's console), as Node streams; see {@link VirtioConsole}. Needs
   * `irqchip: true`; add it before {@link loadLinux} so the ACPI tables name it.
   *
   * @example
   * ```ts
   * const hvc0 = vm.addVirtioConsole();
   * hvc0.output.pipe(process.stdout);
   * process.stdin.pipe(hvc0.input);
   * ```
   */
  addVirtioConsole(): VirtioConsole {
    const console = new VirtioConsole(callNative(() => this.#native.addVirtioConsole()));
    this.#outputs.set(console.info.base, console);
    return console;
  }

  /**
   * Adds a virtio network device (`eth0` in a Linux guest): on an existing TAP interface
   * (`{ tap: 'tap0' }`), on frames TypeScript handles (`{ frames: (frame) => … }`, with
   * {@link NetDevice.send} the other way), or on a switch joining machines of this process
   * (`{ switch: createSwitch() }`); see {@link NetDevice}. Needs `irqchip: true`; add it
   * before {@link loadLinux} so the ACPI tables name it.
   *
   * With `{ tap, vhost: true }` the host kernel's vhost-net moves the frames between the
   * guest's queues and the TAP (no copy through kvmkit's I/O thread).
   *
   * @throws {@link KvmkitError} `TAP_NOT_FOUND` (no such interface, or not a TAP),
   *   `TAP_PERMISSION_DENIED` (another user's TAP, or no CAP_NET_ADMIN), `TAP_FAILED`;
   *   `VHOST_UNAVAILABLE` with `vhost` where `/dev/vhost-net` is missing or not permitted,
   *   `VHOST_FAILED` if the kernel refuses it;
   *   {@link ArgumentError} for a bad MAC address, MTU or backend.
   * @example
   * ```ts
   * const lan = createSwitch();
   * vmA.addNet({ switch: lan, mac: '02:00:00:00:00:0a' });
   * vmB.addNet({ switch: lan, mac: '02:00:00:00:00:0b' });
   * const tapped = vmC.addNet({ tap: 'tap0' });
   * const fast = vmD.addNet({ tap: 'tap1', vhost: true });
   * ```
   */
  addNet(options: NetOptions): NetDevice {
    const net = addNet(options, (mac, tap, mtu, vhost) => this.#native.addNet(mac, tap, mtu, vhost));
    this.#outputs.set(net.info.base, net);
    return net;
  }

  /**
   * Adds a virtio-vsock device: stream sockets between the guest (context ID `cid`) and the
   * host (CID 2) as `net.Socket`s, and Firecracker's Unix sockets with `uds`. Served on the
   * machine's I/O thread like every virtio device; add it before {@link loadLinux}. Needs
   * `irqchip: true`.
   *
   * With `vhost: true` the host kernel's vhost-vsock serves it: the host side is then the
   * kernel's `AF_VSOCK` (the host connects to CID `cid`), not {@link Vsock.connect} and
   * {@link Vsock.listen}.
   *
   * @throws {@link ConfigError} for a `cid` below 3, or a `uds` path that is too long, exists
   * already or cannot be bound; {@link KvmkitError} `VHOST_UNAVAILABLE` with `vhost` where
   * `/dev/vhost-vsock` is missing or not permitted, `VSOCK_CID_IN_USE` if another VM on the
   * host has `cid`.
   * @example
   * ```ts
   * const vm = Machine.create({ memory: '256M', irqchip: true });
   * const vsock = vm.addVsock({ cid: 3 });
   * vsock.listen(1234, (socket) => socket.pipe(socket)); // the guest connects to 2:1234
   * ```
   */
  addVsock(options: VsockOptions): Vsock {
    const { cid, uds, vhost } = vsockOptions(options, 'options');
    return new Vsock(
      callNative(() => this.#native.addVsock(cid, uds, vhost)),
      cid,
    );
  }

  /** Adds the CMOS real-time clock at 0x70–0x71 (Rust), reading the host's time. */
  addRtc(): BuiltinDevice {
    return this.#builtin({ kind: 'rtc' });
  }

  /**
   * Adds a Rust null device on `length` ports (or, with `space: 'mmio'`, MMIO bytes) from
   * `base`: reads return `fill` (default 0xff) in every byte, writes are dropped, and the
   * exit never leaves the vCPU thread.
   */
  addNullDevice(base: number, length: number, options: { fill?: number; space?: 'port' | 'mmio' } = {}): BuiltinDevice {
    const { fill = 0xff, space = 'port' } = options;
    oneOf(space, 'options.space', ['port', 'mmio'] as const);
    wholeNumber(fill, 'options.fill', 0, 0xff);
    deviceArgs(space, base, length, { name: 'null' });
    return this.#builtin({ kind: 'null', base, length, fill, space });
  }

  #builtin(spec: NativeBuiltin): BuiltinDevice {
    const info = callNative(() => this.#native.addBuiltin(spec));
    return { name: info.name, space: info.space, base: info.base, length: info.length };
  }

  /**
   * A free page-aligned window of `length` bytes in the 32-bit MMIO hole (from 0xc0000000 up
   * to the IOAPIC), for {@link addMmioDevice}: windows handed out, and ranges devices already
   * occupy there, are never handed out again until that device is removed.
   */
  allocateMmio(length: number): number {
    wholeNumber(length, 'length', 1, 0xffff_ffff);
    return callNative(() => this.#native.allocateMmio(length));
  }

  /**
   * A free interrupt line (5 to 23, never 8, the CMOS clock's) that no built-in or virtio device and no {@link createIrqFd} has taken,
   * for a device of yours to raise (raising it needs `irqchip`).
   */
  allocateIrq(): number {
    return callNative(() => this.#native.allocateIrq());
  }

  /**
   * Runs the machine on the calling thread and returns how it ended. Each vCPU exit to a
   * TypeScript device calls its handler directly, with no hand-off between threads — the
   * lowest-latency way to answer exits. Handlers must answer synchronously. The thread is
   * busy until the guest ends, so run it in a worker (`node:worker_threads`) to keep an event
   * loop free; stop it from elsewhere with {@link stopMachine}, or from a handler with
   * {@link stop}. Needs a machine with one vCPU; posted devices are called like the others.
   */
  runInline(): Outcome {
    if (this.vcpus.length !== 1) {
      throw new KvmkitError(
        'INVALID_STATE',
        `cannot run inline: the machine has ${this.vcpus.length} vCPUs and one thread can drive only one`,
      );
    }
    const run = callNative(() => this.#native.startInline((e) => this.#onEvent(e)));
    this.emit('start');
    try {
      this.#handoff.runInline(run);
    } catch (error) {
      throw fromNative(error);
    }
    const outcome = this.#native.outcome;
    if (outcome === null || outcome === undefined) {
      throw new KvmkitError('INTERNAL_PANIC', 'the inline run ended without an outcome');
    }
    return this.#settle(outcome);
  }

  /** Raises (`true`) or lowers (`false`) interrupt line `irq` (needs `irqchip`). */
  setIrqLine(irq: number, level: boolean): void {
    interrupts.setIrqLine(this.#native, irq, level);
  }

  /** Raises and lowers interrupt line `line`: one edge-triggered interrupt (needs `irqchip`). */
  pulseIrq(irq: number): void {
    this.setIrqLine(irq, true);
    this.setIrqLine(irq, false);
  }

  /**
   * Sends a message-signalled interrupt (needs `irqchip`): `address` in the local APICs'
   * window at 0xfee00000 (bits 12–19 pick the destination APIC), `data` holds the vector.
   * Returns whether it was delivered.
   */
  signalMsi(address: number, data: number): boolean {
    return interrupts.signalMsi(this.#native, address, data);
  }

  /** An eventfd that raises interrupt `gsi` whenever triggered (needs `irqchip`). */
  createIrqFd(gsi: number): IrqFd {
    return interrupts.createIrqFd(this.#native, gsi);
  }

  /** An eventfd that counts the guest's writes to a port or address, answered in the kernel without a VM exit. */
  createIoEventFd(options: IoEventFdOptions): IoEventFd {
    return interrupts.createIoEventFd(this.#native, options);
  }

  /** Starts the vCPU threads. */
  start(): void {
    callNative(() => this.#native.start((e) => this.#onEvent(e)));
    this.emit('start');
  }

  /**
   * Starts the machine and waits for the run to end. Rejects (never throws) when the
   * machine cannot start: it ran already, or it is closed.
   * @example
   * ```ts
   * const outcome = await vm.run();
   * if (outcome.reason === 'error') console.error(outcome.error.message);
   * ```
   */
  run(): Promise<Outcome> {
    try {
      this.start();
    } catch (error) {
      return Promise.reject(error);
    }
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
    const state = this.state;
    this.#native.close();
    if (state === 'created') {
      this.#endOutputs('the machine was closed before it ran');
    } else if (state !== 'closed') {
      await this.#ended;
    }
  }

  /** Closes the machine: `await using vm = Machine.create(...)`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #onEvent(e: NativeEvent): void {
    const binding = native();
    switch (e.type) {
      case binding.EVENT_ACCESS:
        this.#handoff.onDoorbell();
        break;
      case binding.EVENT_POSTED:
        this.#handoff.onPostedDoorbell();
        break;
      case binding.EVENT_OUTPUT:
        this.#outputs.get(e.device)?.drain();
        break;
      case binding.EVENT_DEVICE_ERROR:
        if (e.failure) {
          this.emit('device-error', { device: e.failure.name, base: e.device, message: e.failure.message });
        }
        break;
      case binding.EVENT_PAUSED:
        for (const w of this.#pauseWaiters.splice(0)) {
          w.resolve();
        }
        this.emit('paused');
        break;
      case binding.EVENT_END:
        if (e.outcome !== undefined && e.outcome !== null && this.#outcome === undefined) {
          const outcome = e.outcome;
          // Writes posted before the end are handled before anyone learns of it.
          this.#handoff.drainPosted();
          void this.#handoff.settled().then(() => this.#settle(outcome));
        }
        break;
    }
  }

  /** The outcome with the debug-exit status as {@link addDebugExit}'s convention says. */
  #convention(outcome: Outcome): Outcome {
    return this.#qemuDebugExit && outcome.reason === 'device-request' && outcome.device === 'debug-exit'
      ? { ...outcome, status: ((outcome.status << 1) | 1) >>> 0 }
      : outcome;
  }

  /** Emits `access` for an access a device is about to handle (called only while someone listens). */
  #observe(r: SlotRecord, device: string): void {
    this.emit('access', {
      vcpu: r.vcpu,
      device,
      ...describeAccess(r),
      address: r.address,
      size: r.size,
      count: r.count,
    });
  }

  /** Tells the devices with output that the run ended (`why` says how). */
  #endOutputs(why: string): void {
    for (const output of this.#outputs.values()) {
      output.end(why);
    }
  }

  /** Records the outcome (once) and tells everyone waiting for it. */
  #settle(native: NativeOutcome): Outcome {
    if (this.#outcome !== undefined) {
      return this.#outcome;
    }
    const outcome = this.#convention(toOutcome(native, this.#handoff.failure));
    this.#outcome = outcome;
    this.#endOutputs(`the run ended (${outcome.reason})`);
    for (const w of this.#pauseWaiters.splice(0)) {
      w.reject(new KvmkitError('INVALID_STATE', `cannot pause: the run ended (${outcome.reason})`));
    }
    this.#resolveEnded(outcome);
    this.emit('end', outcome);
    return outcome;
  }
}

/** Stops machine `id` ({@link Machine.id}) from any thread; returns whether it exists. */
export function stopMachine(id: number): boolean {
  wholeNumber(id, 'id', 0, 0xffff_ffff);
  return native().stopMachine(id);
}
