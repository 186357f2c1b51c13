/**
 * virtio-net: a guest's network interface on a TAP, on frames handled in TypeScript, or on
 * a switch that joins the machines of one process.
 * @module
 */
import { randomBytes } from 'node:crypto';
import { ArgumentError, callNative } from '../errors.js';
import type { VirtioDeviceInfo } from '../machine.js';
import type { NativeNet } from '../native.js';
import { boolean, bytes, describe, object, optionalFunction, text, wholeNumber } from '../validate.js';

/** The shortest Ethernet frame the device carries: a header (destination, source, type). */
const MIN_FRAME = 14;
/** The longest: an IP datagram's most plus its Ethernet and VLAN headers. */
const MAX_FRAME = 65_535 + 18;

/** What every kind of network device takes besides its backend. */
export interface NetCommonOptions {
  /**
   * Its MAC address, `xx:xx:xx:xx:xx:xx` (unicast). Default: a random locally administered
   * one (`02:…` to `fe:…`, see {@link NetDevice.mac}).
   */
  mac?: string;
  /** The MTU the guest is told to use (68 to 65535; default: none, the guest's own 1500). */
  mtu?: number;
}

/** A network device on an existing TAP interface. */
export interface TapNetOptions extends NetCommonOptions {
  /**
   * The TAP's name. Create it first (as root): `ip tuntap add dev tap0 mode tap user $USER`;
   * its owner may then attach without privileges.
   */
  tap: string;
  /**
   * Let the host kernel's vhost-net move the frames between the guest and the TAP (needs
   * `/dev/vhost-net`: the `vhost_net` module, and root or access to the node). The device
   * then has no host-side frames: {@link NetDevice.send} throws `VHOST_IN_KERNEL` and its
   * {@link NetDevice.counters} stay 0. Default: false (kvmkit's I/O thread moves them).
   */
  vhost?: boolean;
}

/** A network device whose frames TypeScript handles. */
export interface FramesNetOptions extends NetCommonOptions {
  /**
   * Called with each Ethernet frame the guest transmits (no virtio header, no FCS), in
   * batches on the event loop. Frames for the guest go through {@link NetDevice.send}.
   */
  frames: (frame: Buffer) => void;
}

/** A network device plugged into a {@link NetSwitch}. */
export interface SwitchNetOptions extends NetCommonOptions {
  /** The switch. */
  switch: NetSwitch;
}

/** How {@link Machine.addNet} connects a network device. */
export type NetOptions = TapNetOptions | FramesNetOptions | SwitchNetOptions;

/** Frame counts of a {@link NetDevice}. */
export interface NetCounters {
  /** Frames delivered to the guest. */
  readonly rxFrames: number;
  /**
   * Frames for the guest dropped: it had posted no receive buffers for them while 256 were
   * already waiting, or a buffer too short for the frame.
   */
  readonly rxDropped: number;
  /** Frames the guest transmitted. */
  readonly txFrames: number;
  /** What the guest transmitted that was no valid frame, and frames a TAP refused. */
  readonly txDropped: number;
}

/**
 * A virtio network device (one queue pair, MAC, link always up), served on the machine's
 * I/O thread. The guest's transmitted frames go to its TAP, its `frames` callback or its
 * switch; {@link send} gives the guest a frame whatever the backend.
 *
 * Transmitted frames wait (up to 256) until the event loop takes them: while they wait the
 * guest's transmit ring backs up, so nothing is lost and memory stays bounded. Frames for
 * the guest wait (up to 256) for its receive buffers; past that they are dropped, as a NIC
 * drops what it has no buffers for ({@link counters}).
 *
 * @example
 * ```ts
 * const net = vm.addNet({ frames: (frame) => console.log('guest sent', frame.length, 'bytes') });
 * net.send(frame); // an Ethernet frame for the guest
 * ```
 */
export class NetDevice {
  /** Where it sits: its virtio-mmio window and interrupt line. */
  readonly info: VirtioDeviceInfo;
  /** Its MAC address, `xx:xx:xx:xx:xx:xx`. */
  readonly mac: string;
  readonly #native: NativeNet;
  #receiver: ((frame: Buffer) => void) | undefined;

  /** @internal */
  constructor(native: NativeNet, mac: string) {
    this.#native = native;
    this.info = native.info;
    this.mac = mac;
  }

  /** @internal Hands transmitted frames to `receiver` from now on. */
  deliverTo(receiver: ((frame: Buffer) => void) | undefined): void {
    this.#receiver = receiver;
  }

  /**
   * Queues Ethernet frame `frame` (destination, source, type and payload; no FCS) for the
   * guest. Returns whether it was queued: `false` means it was dropped because the guest
   * has not taken the 256 frames before it.
   */
  send(frame: Uint8Array): boolean {
    const data = bytes(frame, 'frame');
    if (data.length < MIN_FRAME || data.length > MAX_FRAME) {
      throw new ArgumentError(
        'frame',
        `expected an Ethernet frame of ${MIN_FRAME} to ${MAX_FRAME} bytes, got ${data.length}`,
      );
    }
    const buffer = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    return callNative(() => this.#native.send(buffer));
  }

  /** Its frame counts so far. */
  get counters(): NetCounters {
    return this.#native.counters;
  }

  /** @internal Hands the frames the guest transmitted to the backend. */
  drain(): void {
    const frames = callNative(() => this.#native.takeFrames());
    if (this.#receiver !== undefined) {
      for (const frame of frames) {
        this.#receiver(frame);
      }
    }
  }

  /** @internal The run ended: hands over what is left. */
  end(): void {
    this.drain();
  }
}

/**
 * An Ethernet switch in TypeScript: each {@link NetDevice} plugged in (with
 * `{ switch }`) is a port. It learns which port each source MAC address is on, sends a
 * unicast frame only there, and floods broadcast, multicast and unknown destinations to
 * every other port. Frames move on the event loop without copies beyond the devices' own.
 *
 * @example
 * ```ts
 * const net = createSwitch();
 * const a = createLinuxMachine({ kernel, initrd, net: [{ switch: net }] });
 * const b = createLinuxMachine({ kernel, initrd, net: [{ switch: net }] });
 * // a's and b's eth0 are on one Ethernet segment: give them addresses and ping.
 * ```
 */
export class NetSwitch {
  /** Most addresses remembered; past it the table starts over. */
  static readonly TABLE_SIZE = 4096;
  readonly #ports = new Set<NetDevice>();
  readonly #table = new Map<number, NetDevice>();

  /** The devices plugged in. */
  get ports(): readonly NetDevice[] {
    return [...this.#ports];
  }

  /** @internal Plugs `net` in; returns what forwards its frames. */
  plug(net: NetDevice): (frame: Buffer) => void {
    this.#ports.add(net);
    return (frame) => this.#forward(net, frame);
  }

  #forward(from: NetDevice, frame: Buffer): void {
    const source = frame.readUIntBE(6, 6);
    if ((frame[6] ?? 1) % 2 === 0) {
      if (this.#table.size >= NetSwitch.TABLE_SIZE && !this.#table.has(source)) {
        this.#table.clear();
      }
      this.#table.set(source, from);
    }
    const to = (frame[0] ?? 1) % 2 === 0 ? this.#table.get(frame.readUIntBE(0, 6)) : undefined;
    if (to !== undefined) {
      if (to !== from) {
        to.send(frame);
      }
      return;
    }
    for (const port of this.#ports) {
      if (port !== from) {
        port.send(frame);
      }
    }
  }
}

/**
 * Creates an Ethernet switch to plug network devices into (`{ switch }` in
 * {@link Machine.addNet} or `createLinuxMachine`'s `net`), so machines in one process talk.
 *
 * @example
 * ```ts
 * const net = createSwitch();
 * vmA.addNet({ switch: net });
 * vmB.addNet({ switch: net });
 * ```
 */
export function createSwitch(): NetSwitch {
  return new NetSwitch();
}

/** Parses `xx:xx:xx:xx:xx:xx` into 6 bytes; refuses what is no unicast address. */
function parseMac(value: unknown, name: string): Buffer {
  const mac = text(value, name);
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) {
    throw new ArgumentError(name, `expected a MAC address like 02:00:00:00:00:01, got ${describe(value)}`);
  }
  const octets = Buffer.from(mac.replaceAll(':', ''), 'hex');
  if ((octets[0] ?? 0) % 2 === 1) {
    throw new ArgumentError(
      name,
      `${mac} is a multicast address: a network device needs a unicast one (first octet even)`,
    );
  }
  if (octets.every((b) => b === 0)) {
    throw new ArgumentError(name, 'expected a MAC address other than 00:00:00:00:00:00');
  }
  return octets;
}

/** A random locally administered unicast MAC address. */
function randomMac(): Buffer {
  const octets = randomBytes(6);
  octets[0] = ((octets[0] ?? 0) & 0xfc) | 0x02;
  return octets;
}

/** Formats 6 bytes as `xx:xx:xx:xx:xx:xx`. */
function formatMac(octets: Buffer): string {
  return [...octets].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** How {@link addNet} reaches the binding. */
type AddNative = (
  mac: Buffer,
  tap: string | undefined,
  mtu: number | undefined,
  vhost: boolean | undefined,
) => NativeNet;

/** Checks `options`, attaches the device with `add`, and connects its backend. */
export function addNet(options: NetOptions, add: AddNative): NetDevice {
  const o = object(options, 'options');
  const kinds = ['tap', 'frames', 'switch'].filter((k) => o[k] !== undefined);
  if (kinds.length !== 1) {
    throw new ArgumentError(
      'options',
      `expected exactly one of tap, frames or switch, got ${kinds.join(', ') || 'none'}`,
    );
  }
  const mac = o.mac === undefined ? randomMac() : parseMac(o.mac, 'options.mac');
  const mtu = o.mtu === undefined ? undefined : wholeNumber(o.mtu, 'options.mtu', 68, 65_535);
  const tap = o.tap === undefined ? undefined : text(o.tap, 'options.tap');
  const vhost = o.vhost === undefined ? undefined : boolean(o.vhost, 'options.vhost');
  if (vhost === true && tap === undefined) {
    throw new ArgumentError('options.vhost', 'vhost-net moves frames to a TAP: give tap with vhost');
  }
  optionalFunction(o.frames, 'options.frames');
  if (o.switch !== undefined && !(o.switch instanceof NetSwitch)) {
    throw new ArgumentError('options.switch', `expected a switch from createSwitch(), got ${describe(o.switch)}`);
  }
  const native = callNative(() => add(mac, tap, mtu, vhost));
  const net = new NetDevice(native, formatMac(mac));
  const sw = o.switch as NetSwitch | undefined;
  net.deliverTo(sw === undefined ? (o.frames as FramesNetOptions['frames'] | undefined) : sw.plug(net));
  return net;
}
