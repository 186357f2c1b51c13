/**
 * The binding's hand-off calls used out of order: the argument-less calls of a streak
 * (`servePoll`, and the reply function `serveReplier` makes) and of an inline run (the step
 * function `inlineStepper` makes) find their machine in what the thread began, and
 * anywhere else fail with a typed error instead of touching memory they were never given.
 */
import { expect, it } from 'vitest';
import { resolveConfig } from '../src/config.js';
import { callNative, KvmkitError } from '../src/errors.js';
import { native } from '../src/native.js';
import { describeKvm } from './kvm.js';
import { thrownBy } from './throws.js';

/** The code of the kvmkit error the native call `f` throws. */
function codeOf(f: () => unknown): string {
  return thrownBy(() => callNative(f), KvmkitError).code;
}

describeKvm("the hand-off's native calls", () => {
  it('refuse the calls of a streak or an inline run outside one', () => {
    const b = native();
    expect(codeOf(b.serveReplier())).toBe('INVALID_STATE');
    expect(codeOf(() => b.servePoll(0))).toBe('INVALID_STATE');
    expect(codeOf(b.inlineStepper())).toBe('INVALID_STATE');
    // Ending what was never begun does nothing.
    b.serveEnd();
    b.inlineEnd();
  });

  it('serve the machine begun last, and refuse once it is closed', () => {
    const b = native();
    const machine = new b.NativeMachine(resolveConfig({ memory: '2M' }).native);
    const slot = new Float64Array(b.SLOT_FIELDS);
    const short = new Float64Array(b.SLOT_FIELDS - 1);
    expect(codeOf(() => b.serveBegin(machine.handle(), short, 0))).toBe('INVALID_CONFIG');
    const serveReply = b.serveReplier();
    b.serveBegin(machine.handle(), slot, 0);
    try {
      // Nothing waits: the poll finds no access, and a reply has no vCPU waiting for it.
      expect(b.servePoll(0)).toBe(b.POLL_NONE);
      slot[b.SLOT_VCPU] = 0;
      expect(codeOf(serveReply)).toBe('NOT_WAITING');
      slot[b.SLOT_VCPU] = 7;
      expect(codeOf(serveReply)).toBe('NO_SUCH_VCPU');
      machine.close();
      expect(codeOf(() => b.servePoll(0))).toBe('INVALID_STATE');
    } finally {
      b.serveEnd();
    }
    expect(codeOf(() => b.servePoll(0))).toBe('INVALID_STATE');
  });
});
