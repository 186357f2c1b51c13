/**
 * TAP interfaces for the tests that attach virtio-net to one (as root, with ip(8)).
 */
import { execFileSync } from 'node:child_process';

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });

/** Why this process may not create TAP interfaces (root, /dev/net/tun and ip(8)), if it may not. */
export function cannotCreateTaps(): string | undefined {
  if (process.getuid?.() !== 0) {
    return 'not root: creating a TAP needs CAP_NET_ADMIN';
  }
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'no ip(8) to create a TAP with';
  }
  return undefined;
}

/** Creates TAP `name` with the host's address `address` (`10.0.0.1/24`) on it, up, IPv6 off (no stray frames). */
export function makeTap(name: string, address: string): void {
  ip('tuntap', 'add', 'dev', name, 'mode', 'tap');
  execFileSync('sysctl', ['-q', '-w', `net.ipv6.conf.${name}.disable_ipv6=1`], { stdio: 'ignore' });
  ip('addr', 'add', address, 'dev', name);
  ip('link', 'set', name, 'up');
}

/** Deletes TAP `name` (also while a machine still holds it open). */
export function deleteTap(name: string): void {
  ip('link', 'del', 'dev', name);
}
