/**
 * kvmkit: KVM virtual machines embedded in Node.js.
 *
 * Create a {@link Machine}, give it memory and vCPUs, load a guest, attach device models
 * written in TypeScript (or Rust built-ins), and run it. The benchmark harness is the
 * `kvmkit/bench` subpath.
 * @module kvmkit
 */

export { ByteStreamDevice } from './byte-stream.js';
export type { MachineConfig, MemoryBacking, MemoryRegion, UnhandledPolicy } from './config.js';
export type { Access, Device, DeviceHandle, ReadValue } from './devices.js';
export {
  ArgumentError,
  ConfigError,
  type ErrorCode,
  KvmkitError,
  MachineError,
  type MachineErrorCode,
} from './errors.js';
export { hardwareVirtualization } from './hardware.js';
export type { IoEventFd, IoEventFdOptions, IrqFd } from './irq.js';
export { defaultKernelCache } from './kernel-cache.js';
export {
  type KvmAvailability,
  type KvmInfo,
  kvmAvailability,
  kvmInfo,
  type MissingCapability,
  supportedCpuid,
} from './kvm.js';
export {
  cpuidMasksForHost,
  createLinuxMachine,
  DEFAULT_CMDLINE,
  type LinuxDevices,
  type LinuxMachine,
  type LinuxOptions,
  SOFTWARE_KVM_CPUID_MASKS,
  SOFTWARE_KVM_KERNEL_PARAMS,
  withHostWorkarounds,
} from './linux.js';
export type {
  FlatBinaryOptions,
  LoadedKernel,
  LoadedMultiboot,
  LoadLinuxOptions,
  ModulePlacement,
  MultibootModule,
} from './loaders.js';
export {
  type AccessEvent,
  type BuiltinDevice,
  type DebugConsole,
  type DeviceError,
  Machine,
  type MachineEvents,
  type MachineState,
  stopMachine,
  type VirtioDeviceInfo,
} from './machine.js';
export { GuestMemory, type RamRegion } from './memory.js';
export type { Outcome } from './outcome.js';
export { type SerialOptions, SerialPort } from './serial.js';
export { parseSize, type Size } from './size.js';
export type { ExitKindName, LatencyBucket, LatencyStats, VcpuStats } from './stats.js';
export {
  type CpuidEntry,
  type CpuidMask,
  type CpuidOverride,
  type CpuMode,
  type DescriptorTable,
  type ExceptionEvent,
  type Fpu,
  type InterruptEvent,
  type MpState,
  type MsrEntry,
  maskCpuid,
  type NmiEvent,
  type Registers,
  type Segment,
  type SpecialRegisters,
  Vcpu,
  type VcpuEvents,
  type VcpuSetup,
} from './vcpu.js';
export { VirtioConsole } from './virtio/console.js';
export {
  type BackendDiskOptions,
  type BlockBackend,
  type Disk,
  type DiskCommonOptions,
  type DiskOptions,
  type FileDiskOptions,
  type MemoryDiskOptions,
  SECTOR_SIZE,
} from './virtio/disk.js';
export {
  createSwitch,
  type FramesNetOptions,
  type NetCommonOptions,
  type NetCounters,
  NetDevice,
  type NetOptions,
  NetSwitch,
  type SwitchNetOptions,
  type TapNetOptions,
} from './virtio/net.js';
export { Vsock, type VsockConnectOptions, type VsockListener, type VsockOptions } from './virtio/vsock.js';
