# A breakpoint: 64-bit long mode, loaded at 0x100000. Executes `fwait`, then installs an
# interrupt gate for #BP (vector 3) and executes `int3`; the handler writes 3 to the
# debug-exit port (0xf4), which ends the run. Hardware virtualization runs both itself; a
# software-assisted KVM's emulator gives up on each, and kvmkit finishes them instead.

    .include "idt64.inc"
    .code64
    .globl _start
_start:
    fwait
    set_gate idt, 3, handler
    lidt    idt_ptr(%rip)
    int3
1:  jmp     1b

handler:
    mov     $3, %al
    outb    %al, $0xf4
    iretq

    idt_table idt
