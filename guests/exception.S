# Exception injection: 64-bit long mode, loaded at 0x100000.
#
# Installs an interrupt gate for the breakpoint exception (#BP, vector 3), writes 1 to port
# 0x500 to say it is ready, and spins. Only an exception the host injects gets it out: the
# handler writes the vector to the debug-exit port (0xf4), which ends the run.

    .include "idt64.inc"
    .code64
    .globl _start
_start:
    set_gate idt, 3, handler
    lidt    idt_ptr(%rip)

    mov     $0x500, %dx
    mov     $1, %al
    outb    %al, %dx                # ready
1:  jmp     1b

handler:
    mov     $3, %al
    outb    %al, $0xf4
    iretq

    idt_table idt
