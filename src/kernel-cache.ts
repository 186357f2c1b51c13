/**
 * Where kvmkit keeps bzImage kernels it has decompressed.
 * @module
 */
import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * Where decompressed kernels are cached by default: `$KVMKIT_CACHE_DIR/kernels`, else
 * `$XDG_CACHE_HOME/kvmkit/kernels`, else `~/.cache/kvmkit/kernels`.
 */
export function defaultKernelCache(): string {
  const root = process.env.KVMKIT_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'kvmkit');
  return join(root, 'kernels');
}
