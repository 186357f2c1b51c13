/**
 * virtio-console (`hvc0`) as Node streams.
 * @module
 */
import { ByteStreamDevice } from '../byte-stream.js';
import type { VirtioDeviceInfo } from '../machine.js';
import type { NativeVirtioConsole } from '../native.js';

/**
 * A virtio console with one port (`hvc0` in a Linux guest), served on the machine's I/O
 * thread. `output` streams what the guest writes and ends when the run ends; what is
 * written to `input` is queued (up to 64 KiB; writes wait beyond) and delivered into the
 * receive buffers the guest posts.
 *
 * A guest writes a whole buffer per notification instead of taking two exits per byte as
 * on the 16550, which makes it the console for bulk output. As with the UART, the guest
 * never waits for `output` to be read: while its reader is behind, the device keeps the
 * latest 1 MiB and drops older bytes (counted in {@link dropped}).
 *
 * @example
 * ```ts
 * const { vm, virtioConsole } = createLinuxMachine({
 *   kernel: 'vmlinuz',
 *   initrd: 'initrd.img',
 *   virtioConsole: true, // or vm.addVirtioConsole() on a machine of your own
 *   cmdline: `${DEFAULT_CMDLINE} console=hvc0`,
 * });
 * virtioConsole?.output.pipe(process.stdout);
 * virtioConsole?.input.write('uname -a\n');
 * await vm.run();
 * ```
 */
export class VirtioConsole extends ByteStreamDevice {
  /** Where it sits: its virtio-mmio window and interrupt line. */
  readonly info: VirtioDeviceInfo;
  readonly #native: NativeVirtioConsole;

  /** @internal */
  constructor(native: NativeVirtioConsole) {
    super(native);
    this.#native = native;
    this.info = native.info;
  }

  /** Bytes of output dropped so far because the reader of {@link output} was behind. */
  get dropped(): number {
    return this.#native.dropped;
  }
}
