# Interrupt delivery through the local APIC: 64-bit long mode, loaded at 0x100000; needs
# irqchip.
#
# Installs an interrupt gate for vector 0x40, software-enables the local APIC, writes 1 to
# port 0x500 to say it is ready, and waits with interrupts on. The handler acknowledges
# the APIC and writes its vector to the debug-exit port (0xf4), which ends the run.

    .include "idt64.inc"
    .code64
    .globl _start
_start:
    cli
    set_gate idt, 0x40, handler
    lidt    idt_ptr(%rip)

    mov     $0xfee000f0, %rdi       # spurious-interrupt vector register
    movl    $0x1ff, (%rdi)          # APIC software enable

    mov     $0x500, %dx
    mov     $1, %al
    outb    %al, %dx                # ready
    sti
1:  hlt
    jmp     1b

handler:
    mov     $0xfee000b0, %rdi       # end of interrupt
    movl    $0, (%rdi)
    mov     $0x40, %al
    outb    %al, $0xf4
    iretq

    idt_table idt
