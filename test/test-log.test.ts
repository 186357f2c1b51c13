import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { TestLog } from './boot/debian.js';

// The boot and hardware stages keep each guest's console with TestLog; a guest may go on
// printing after its test stops keeping (CI once failed on the stream's 'error' for that).
describe('TestLog, the console logs of the boot and hardware stages', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'kvmkit-test-log-'));
    vi.stubEnv('KVMKIT_TEST_LOG_DIR', dir);
  });
  afterEach(() => {
    vi.unstubAllEnvs();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps what comes before end() and drops what comes after, without an error', async () => {
    const log = new TestLog('late');
    log.write('KVMKIT-HVC0-42\n');
    log.note('done');
    const ended = log.end();
    log.write('~ # ');
    log.note('after the end');
    await ended;
    // A stream's 'error' comes on a later tick than the write: let it come if it would.
    await new Promise((resolve) => setImmediate(resolve));
    const files = readdirSync(dir);
    expect(files).toEqual([expect.stringMatching(/^TestLog.*_late\.log$/)]);
    const kept = readFileSync(join(dir, files[0] ?? ''), 'utf8');
    expect(kept).toMatch(/^KVMKIT-HVC0-42\n\n\[test \+\d+\.\d s\] done\n$/);
  });
});
