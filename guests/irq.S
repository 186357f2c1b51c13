# Interrupt delivery through the PIC: 16-bit real mode, loaded at 0x1000; needs irqchip.
#
# Points vector 0x25 (IRQ 5 once the PIC's base is 0x20) at its handler, programs the master
# PIC with only IRQ 5 unmasked, writes 1 to port 0x500 to say it is ready, and waits with
# interrupts on. The handler acknowledges the PIC and writes its vector to the debug-exit
# port (0xf4), which ends the run.

    .code16
    .globl _start
_start:
    cli
    xor     %ax, %ax
    mov     %ax, %ds
    mov     %ax, %ss
    mov     $0x7000, %sp
    movw    $handler, 0x25 * 4
    movw    $0, 0x25 * 4 + 2

    mov     $0x11, %al              # ICW1: edge-triggered, cascade, ICW4 follows
    outb    %al, $0x20
    mov     $0x20, %al              # ICW2: vectors 0x20-0x27
    outb    %al, $0x21
    mov     $0x04, %al              # ICW3: slave on IRQ 2
    outb    %al, $0x21
    mov     $0x01, %al              # ICW4: 8086 mode
    outb    %al, $0x21
    mov     $0xdf, %al              # mask every line but IRQ 5
    outb    %al, $0x21

    mov     $0x500, %dx
    mov     $1, %al
    outb    %al, %dx                # ready
    sti
1:  hlt
    jmp     1b

handler:
    mov     $0x20, %al              # end of interrupt
    outb    %al, $0x20
    mov     $0x25, %al
    outb    %al, $0xf4
    iret
