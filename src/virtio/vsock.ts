/**
 * virtio-vsock from the host's side: stream sockets to and from the guest as `net.Socket`s.
 * @module
 */

import { Socket } from 'node:net';
import { ArgumentError, callNative, KvmkitError } from '../errors.js';
import type { VirtioDeviceInfo } from '../machine.js';
import type { NativeVsock } from '../native.js';
import { boolean, describe, object, text, wholeNumber } from '../validate.js';

/** How a vsock device is set up. */
export interface VsockOptions {
  /** The guest's context ID: 3 or more (0–2 are reserved; the guest reaches the host at 2). */
  cid: number;
  /**
   * Serve Firecracker's Unix sockets too: the host connects to the socket at `uds` and writes
   * `CONNECT <port>\n` to reach a guest port (answered `OK <host port>\n`), and a guest
   * connecting to host port `P` reaches a socket listening at `<uds>_P`. Nothing may exist
   * at `uds` yet; the socket is removed when the device is closed.
   */
  uds?: string;
  /**
   * Let the host kernel's vhost-vsock serve the device (needs `/dev/vhost-vsock`: the
   * `vhost_vsock` module, and root or access to the node). The host side is then the
   * kernel's `AF_VSOCK`: host programs connect to CID `cid` and listen on ports the guest
   * reaches at CID 2; {@link Vsock.connect} and {@link Vsock.listen} throw `VHOST_IN_KERNEL`.
   * Not with `uds`. Default: false.
   */
  vhost?: boolean;
}

/** How {@link Vsock.connect} connects. */
export interface VsockConnectOptions {
  /**
   * How long to wait for the guest to accept or refuse, in milliseconds (default 10000, at
   * most 2^32-1). A Linux guest answers at once; one that does not is given up on.
   */
  timeoutMs?: number;
}

/** How long {@link Vsock.connect} waits for the guest by default, in milliseconds. */
const DEFAULT_VSOCK_CONNECT_TIMEOUT_MS = 10_000;

/** Stops a {@link Vsock.listen}. */
export interface VsockListener {
  /** The host port. */
  readonly port: number;
  /** Stops listening (connections already made go on). Closing twice does nothing. */
  close(): void;
}

/** The largest vsock port (`VMADDR_PORT_ANY`, 2^32-1, is not one). */
const MAX_PORT = 0xffff_fffe;

/** Checks {@link VsockOptions}. */
export function vsockOptions(value: unknown, name: string): VsockOptions {
  const o = object(value, name);
  const cid = wholeNumber(o.cid, `${name}.cid`, 0, 0xffff_ffff);
  const uds = o.uds === undefined ? undefined : text(o.uds, `${name}.uds`);
  const vhost = o.vhost === undefined ? undefined : boolean(o.vhost, `${name}.vhost`);
  if (uds !== undefined && vhost === true) {
    throw new ArgumentError(`${name}.vhost`, "vhost-vsock's host side is AF_VSOCK: give uds or vhost, not both");
  }
  return {
    cid,
    ...(uds === undefined ? {} : { uds }),
    ...(vhost === undefined ? {} : { vhost }),
  };
}

function port(value: unknown): number {
  return wholeNumber(value, 'port', 0, MAX_PORT);
}

/** A connection's host end as a socket. */
function socketOf(fd: number): Socket {
  return new Socket({ fd, readable: true, writable: true });
}

/**
 * The host side of a guest's vsock device (`machine.addVsock()`): connections to guest ports,
 * and listeners for the guest's connections to host ports (the guest connects to CID 2).
 * Each connection is a `net.Socket` over a Unix socket pair whose other end the device serves
 * on the machine's I/O thread, with virtio-vsock's credit flow control in between.
 * @example
 * ```ts
 * const vm = Machine.create({ memory: '256M', irqchip: true });
 * const vsock = vm.addVsock({ cid: 3 });
 * // Guest side: `socat - VSOCK-CONNECT:2:1234`.
 * vsock.listen(1234, (socket) => socket.pipe(socket)); // an echo server
 * // Guest side: `socat VSOCK-LISTEN:5000 -`, then:
 * const socket = await vsock.connect(5000);
 * socket.end('hello guest\n');
 * ```
 */
export class Vsock {
  readonly #native: NativeVsock;
  /** Where the device sits. */
  readonly info: VirtioDeviceInfo;
  /** The guest's context ID. */
  readonly cid: number;

  /** @internal */
  constructor(native: NativeVsock, cid: number) {
    this.#native = native;
    this.info = native.info;
    this.cid = cid;
  }

  /**
   * Connects to guest port `port` (as the host, CID 2). Resolves once the guest accepts;
   * rejects with a `CONNECTION_REFUSED` {@link KvmkitError} if nothing listens there, the
   * guest's driver is not running, or the device is reset meanwhile; with
   * `CONNECTION_TIMED_OUT` if the guest does not answer within `options.timeoutMs` (the
   * guest's side of the request is reset, so a late answer finds nothing); and with
   * `INVALID_STATE` after {@link Vsock.close} or once the machine is closed.
   *
   * @throws {@link ArgumentError} for a port or timeout out of range.
   */
  connect(port_: number, options: VsockConnectOptions = {}): Promise<Socket> {
    const guestPort = port(port_);
    const o = object(options, 'options');
    const timeoutMs =
      o.timeoutMs === undefined
        ? DEFAULT_VSOCK_CONNECT_TIMEOUT_MS
        : wholeNumber(o.timeoutMs, 'options.timeoutMs', 1, 0xffff_ffff);
    return new Promise((resolve, reject) => {
      callNative(() =>
        this.#native.connect(guestPort, timeoutMs, ({ fd, error, timedOut }) => {
          if (fd !== undefined && fd !== null) {
            resolve(socketOf(fd));
          } else if (timedOut) {
            const what = `vsock port ${guestPort} of guest CID ${this.cid}`;
            const check = `is anything listening on port ${guestPort} in the guest, and is its virtio-vsock driver (vmw_vsock_virtio_transport) loaded?`;
            reject(new KvmkitError('CONNECTION_TIMED_OUT', `${what}: no answer in ${timeoutMs} ms; ${check}`));
          } else {
            const why = error ?? 'refused';
            reject(new KvmkitError('CONNECTION_REFUSED', `vsock port ${guestPort} of guest ${this.cid}: ${why}`));
          }
        }),
      );
    });
  }

  /**
   * Hands each connection the guest opens to host port `port` (CID 2, port `port`) to
   * `onConnection`, ahead of a Unix socket `<uds>_<port>`.
   *
   * @throws {@link KvmkitError} `PORT_IN_USE` if `port` is listened on already;
   * `INVALID_STATE` after {@link Vsock.close} or once the machine is closed.
   */
  listen(port_: number, onConnection: (socket: Socket) => void): VsockListener {
    const hostPort = port(port_);
    if (typeof onConnection !== 'function') {
      throw new ArgumentError('onConnection', `expected a function, got ${describe(onConnection)}`);
    }
    callNative(() => this.#native.listen(hostPort, (fd) => onConnection(socketOf(fd))));
    let open = true;
    return {
      port: hostPort,
      close: () => {
        if (open) {
          open = false;
          this.#native.unlisten(hostPort);
        }
      },
    };
  }

  /**
   * Stops every listener and resets every connection (the guest's driver gets a transport
   * reset event and drops its sockets); with `uds`, closes and removes its socket. The device
   * stays on the machine and refuses the guest's connections. Closing twice does nothing.
   */
  close(): void {
    this.#native.close();
  }
}
