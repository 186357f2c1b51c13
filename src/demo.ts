/**
 * The demo: boots the bundled 64-bit guest, answers its devices in TypeScript and Rust,
 * and reports what happened.
 * @module
 */
import { GUEST_LAYOUT, guestImage } from './guests.js';
import { kvmInfo } from './kvm.js';
import { Machine } from './machine.js';
import type { Outcome } from './outcome.js';
import type { ExitKindName, VcpuStats } from './stats.js';

/** What the demo saw. */
export interface DemoReport {
  /** What the guest printed through the TypeScript console device. */
  readonly console: string;
  /** What it printed through the Rust debug console. */
  readonly debugConsole: string;
  /** The value it wrote to the MMIO register. */
  readonly mmioValue: bigint | undefined;
  /** How the run ended. */
  readonly outcome: Outcome;
  /** Wall time from start to end (ms). */
  readonly elapsedMs: number;
  /** The vCPU's counters. */
  readonly stats: VcpuStats;
}

/** The number the demo's answer device gives the guest. */
export const DEMO_ANSWER = 42;

/** Runs the demo guest; `print` receives each line of the narration. */
export async function runDemo(print: (line: string) => void = () => {}): Promise<DemoReport> {
  const info = kvmInfo();
  print(`kvmkit demo: a 64-bit guest on ${info.path} (KVM API ${info.apiVersion})`);
  await using vm = Machine.create({ memory: '2M' });
  const { address } = GUEST_LAYOUT.long;
  vm.memory.write(address, guestImage('demo'));
  vm.vcpu(0).setup({ mode: 'long', entry: address, stack: 0x8_0000 });

  let line = '';
  let consoleText = '';
  vm.addPortDevice(0x3f8, 8, {
    name: 'console',
    write(_access, value) {
      const ch = String.fromCharCode(Number(value));
      consoleText += ch;
      if (ch === '\n') {
        print(`  guest> ${line}`);
        line = '';
      } else {
        line += ch;
      }
    },
  });
  vm.addPortDevice(0x510, 4, {
    name: 'answer',
    read() {
      print(`  the guest asked the TypeScript "answer" device for a number: giving it ${DEMO_ANSWER}`);
      return DEMO_ANSWER;
    },
  });
  let mmioValue: bigint | undefined;
  vm.addMmioDevice(0xd000_0000, 0x1000, {
    name: 'register',
    write(access, value) {
      mmioValue = BigInt(value);
      print(
        `  the guest wrote 0x${mmioValue.toString(16)} (${access.size} bytes) to the MMIO register at 0x${access.address.toString(16)}`,
      );
    },
  });
  const debug = vm.addDebugConsole(0xe9);

  const started = performance.now();
  const outcome = await vm.run();
  const elapsedMs = performance.now() - started;
  const debugConsole = Buffer.from(debug.take()).toString('latin1');
  for (const l of debugConsole.split('\n').filter(Boolean)) {
    print(`  debug console (Rust built-in)> ${l}`);
  }
  const stats = vm.vcpu(0).stats();
  print(`the run ended: ${describeOutcome(outcome)} after ${elapsedMs.toFixed(1)} ms`);
  print(`exits: ${formatExits(stats)}`);
  print(
    `exit handling (host time from KVM_RUN return to re-entry, ${stats.latency.count} exits): ` +
      `p50 ≈ ${formatNs(stats.latency.p50Ns)}, p99 ≈ ${formatNs(stats.latency.p99Ns)}`,
  );
  return { console: consoleText, debugConsole, mmioValue, outcome, elapsedMs, stats };
}

/** One line describing an outcome. */
export function describeOutcome(outcome: Outcome): string {
  switch (outcome.reason) {
    case 'error':
      return `error ${outcome.error.code}: ${outcome.error.message}`;
    case 'device-request':
      return `${outcome.device} requested exit with status ${outcome.status}`;
    case 'halted':
      return 'the guest halted';
    default:
      return outcome.reason;
  }
}

function formatExits(stats: VcpuStats): string {
  return (Object.entries(stats.exits) as [ExitKindName, number][])
    .filter(([, n]) => n > 0)
    .map(([kind, n]) => `${kind} ${n}`)
    .join(', ');
}

function formatNs(ns: number): string {
  return ns >= 1_000_000 ? `${(ns / 1e6).toFixed(1)} ms` : ns >= 1000 ? `${(ns / 1000).toFixed(0)} µs` : `${ns} ns`;
}
