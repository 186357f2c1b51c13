# A guest that never halts: 16-bit real mode, loaded at 0x1000. It counts in EAX forever
# and never exits, so only the host can stop it.

    .code16
    .globl _start
_start:
    inc     %eax
    jmp     _start
