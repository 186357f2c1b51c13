# A breakpoint: 64-bit long mode, loaded at 0x100000. Installs an interrupt gate for #BP
# (vector 3) and executes `int3`; the handler writes 3 to the debug-exit port (0xf4), which
# ends the run. Hardware virtualization delivers the #BP itself; a software-assisted KVM's
# emulator gives up on `int3`, and kvmkit injects the #BP instead.

    .include "idt64.inc"
    .code64
    .globl _start
_start:
    set_gate idt, 3, handler
    lidt    idt_ptr(%rip)
    int3
1:  jmp     1b

handler:
    mov     $3, %al
    outb    %al, $0xf4
    iretq

    idt_table idt
