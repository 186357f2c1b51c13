/**
 * A machine set up to boot Linux: the legacy PC devices a stock kernel expects, the kernel
 * loaded with its command line and initrd, and a CPUID it can run on this host.
 * @module
 */
import { KvmkitError } from './errors.js';
import { hardwareVirtualization } from './hardware.js';
import type { LoadedKernel, LoadLinuxOptions } from './loaders.js';
import { Machine } from './machine.js';
import type { SerialPort } from './serial.js';
import type { Size } from './size.js';
import { eachOf, object } from './validate.js';
import { type CpuidMask, maskCpuid } from './vcpu.js';
import type { VirtioConsole } from './virtio/console.js';
import type { DiskOptions } from './virtio/disk.js';
import type { NetDevice, NetOptions } from './virtio/net.js';
import type { Vsock, VsockOptions } from './virtio/vsock.js';

/**
 * The virtio devices of a Linux machine. They are added before the kernel is loaded, so
 * the ACPI tables name them (`LNRO0005`) and Debian's `virtio_mmio` module finds them.
 */
export interface LinuxDevices {
  /** A virtio entropy device (`/dev/hwrng`), fed from the host's `getrandom(2)`. */
  rng?: boolean;
  /** virtio-blk disks, `/dev/vda`, `/dev/vdb`… in this order (see {@link Machine.addDisk}). */
  disks?: DiskOptions[];
  /**
   * A virtio console (`hvc0`), as {@link LinuxMachine.virtioConsole}. Add `console=hvc0` to
   * the command line to make it the kernel's console.
   */
  virtioConsole?: boolean;
  /** Network devices (`eth0`, `eth1`, …), in order, as {@link LinuxMachine.net}. */
  net?: NetOptions[];
  /** A vsock device (the guest's `AF_VSOCK` sockets), as {@link LinuxMachine.vsock}. */
  vsock?: VsockOptions;
}

/** The host sides of the virtio devices of a Linux machine. */
interface LinuxVirtioDevices {
  readonly virtioConsole: VirtioConsole | undefined;
  readonly net: readonly NetDevice[];
  readonly vsock: Vsock | undefined;
}

/** Adds the virtio devices `devices` asks for to `vm`. */
function addLinuxDevices(vm: Machine, devices: LinuxDevices): LinuxVirtioDevices {
  if (devices.rng === true) {
    vm.addRng();
  }
  for (const disk of devices.disks ?? []) {
    vm.addDisk(disk);
  }
  const virtioConsole = devices.virtioConsole === true ? vm.addVirtioConsole() : undefined;
  if (devices.net !== undefined) {
    eachOf(devices.net, 'net', object);
  }
  const net = (devices.net ?? []).map((options) => vm.addNet(options));
  const vsock = devices.vsock === undefined ? undefined : vm.addVsock(devices.vsock);
  return { virtioConsole, net, vsock };
}

/** What to boot, and on what. */
export interface LinuxOptions extends LoadLinuxOptions, LinuxDevices {
  /**
   * The kernel: an ELF `vmlinux` (PVH entry used where it has one) or a bzImage (by
   * default decompressed on the host and cached: see {@link LoadLinuxOptions}).
   */
  kernel: string;
  /** An initrd or initramfs. */
  initrd?: string;
  /** The command line (default {@link DEFAULT_CMDLINE}). */
  cmdline?: string;
  /** Guest RAM (default 512M). */
  memory?: Size;
  /** vCPUs (default 1); the others start waiting for INIT/SIPI from the first. */
  vcpus?: number;
  /** CPUID changes applied to every vCPU (default {@link cpuidMasksForHost}). */
  cpuidMasks?: readonly CpuidMask[];
}

/** The command line by default: the console and early messages on COM1, reboot via the i8042. */
export const DEFAULT_CMDLINE = 'console=ttyS0 earlyprintk=serial,ttyS0,115200 reboot=k panic=-1';

/**
 * CPU features a software-assisted KVM (no VT-x/AMD-V, such as kvm_pvm) cannot run, because
 * its instruction emulator gives up on them: CMPXCHG16B, XSAVE and the AVX family that
 * needs it. Measured on such a host: Debian's kernel stops on `lock cmpxchg16b`, and once
 * that is hidden, on XRSTOR.
 */
export const SOFTWARE_KVM_CPUID_MASKS: readonly CpuidMask[] = [
  // Leaf 1 ECX: CX16 (13), XSAVE (26), OSXSAVE (27), AVX (28), F16C (29).
  { function: 1, register: 'ecx', clear: (1 << 13) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 29) },
  // Leaf 7 EBX: AVX2 (5), AVX-512 F/DQ/IFMA/CD/BW/VL (16, 17, 21, 28, 30, 31).
  {
    function: 7,
    index: 0,
    register: 'ebx',
    clear: (1 << 5) | (1 << 16) | (1 << 17) | (1 << 21) | (1 << 28) | (1 << 30) | (1 << 31),
  },
];

/** The CPUID changes this host needs: none on hardware virtualization. */
export function cpuidMasksForHost(): readonly CpuidMask[] {
  return hardwareVirtualization() ? [] : SOFTWARE_KVM_CPUID_MASKS;
}

/**
 * Kernel parameters a software-assisted KVM needs. Such a host's KVM keeps XSAVE, SMAP and
 * POPCNT visible in the guest's CPUID whatever the CPUID template says (it re-sets those
 * bits on KVM_SET_CPUID2), but its emulator cannot run XRSTOR, the CLAC/STAC that SMAP
 * brings, or POPCNT: measured with Debian's 6.1 kernel, which stops on each in turn
 * without these.
 */
export const SOFTWARE_KVM_KERNEL_PARAMS: readonly string[] = ['noxsave', 'clearcpuid=smap,popcnt'];

/** The command line with what this host needs: {@link SOFTWARE_KVM_KERNEL_PARAMS} where KVM is software-assisted. */
export function withHostWorkarounds(cmdline: string): string {
  if (hardwareVirtualization()) {
    return cmdline;
  }
  const words = cmdline.split(/\s+/);
  const missing = SOFTWARE_KVM_KERNEL_PARAMS.filter((p) => !words.includes(p));
  return [cmdline, ...missing].join(' ').trim();
}

/** A machine with a Linux kernel loaded, and its console. */
export interface LinuxMachine {
  /** The machine, ready to `run()`. */
  readonly vm: Machine;
  /** COM1, where the kernel's console is. */
  readonly console: SerialPort;
  /** The virtio console (`hvc0`), if {@link LinuxDevices.virtioConsole} asked for one. */
  readonly virtioConsole: VirtioConsole | undefined;
  /** The network devices {@link LinuxDevices.net} asked for, in order. */
  readonly net: readonly NetDevice[];
  /** Where the kernel was loaded and how it is entered. */
  readonly loaded: LoadedKernel;
  /** The vsock device, if {@link LinuxDevices.vsock} asked for one. */
  readonly vsock: Vsock | undefined;
}

/**
 * Creates a machine for Linux: in-kernel interrupt controllers and PIT, COM1 (16550A, IRQ 4),
 * the i8042 (its reset ends the run with `reset`), the CMOS clock, the virtio devices asked
 * for ({@link LinuxDevices}), ACPI tables (an ACPI power-off ends the run with `shutdown`)
 * and an MP table, and the kernel loaded.
 * Ports nothing claims read as all-ones, as on a PC's empty bus.
 * @example
 * ```ts
 * const { vm, console } = createLinuxMachine({ kernel: 'vmlinuz', initrd: 'initrd.img', memory: '1G', vcpus: 2 });
 * console.output.pipe(process.stdout);
 * const outcome = await vm.run(); // { reason: 'shutdown' } after an ACPI power-off
 * ```
 */
export function createLinuxMachine(options: LinuxOptions): LinuxMachine {
  const vm = Machine.create({
    memory: options.memory ?? '512M',
    vcpus: options.vcpus ?? 1,
    irqchip: true,
    unhandled: 'ignore',
  });
  try {
    const console = vm.addSerial();
    vm.addI8042();
    vm.addRtc();
    const virtio = addLinuxDevices(vm, options);
    const masks = options.cpuidMasks ?? cpuidMasksForHost();
    for (const vcpu of vm.vcpus) {
      vcpu.setCpuid(maskCpuid(vcpu.cpuid(), masks));
    }
    const loadOptions: LoadLinuxOptions = {
      ...(options.bzImage === undefined ? {} : { bzImage: options.bzImage }),
      ...(options.kernelCache === undefined ? {} : { kernelCache: options.kernelCache }),
    };
    const loaded = vm.loadLinux(
      options.kernel,
      options.initrd,
      withHostWorkarounds(options.cmdline ?? DEFAULT_CMDLINE),
      loadOptions,
    );
    return { vm, console, loaded, ...virtio };
  } catch (error) {
    void vm.close();
    throw error instanceof KvmkitError ? error : new KvmkitError('BAD_IMAGE', String(error), { cause: error });
  }
}
