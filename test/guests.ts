/** Builds machines around the bundled test guests. */
import { GUEST_LAYOUT, type GuestName, guestImage } from '../src/guests.js';
import { Machine, type MachineConfig } from '../src/index.js';

const MODES: Record<GuestName, 'real' | 'long'> = {
  demo: 'long',
  io: 'real',
  mmio: 'long',
  smp: 'long',
  spin: 'real',
  unhandled: 'real',
};

/** A machine with `guest` loaded and every vCPU set up to run it. */
export function machineWith(guest: GuestName, config: Partial<MachineConfig> = {}): Machine {
  const vm = Machine.create({ memory: '2M', ...config });
  const mode = MODES[guest];
  const { address } = GUEST_LAYOUT[mode];
  vm.memory.write(address, guestImage(guest));
  for (const vcpu of vm.vcpus) {
    vcpu.setup({ mode, entry: address, stack: 0x8_0000 });
  }
  return vm;
}
