# Writes 0x55 to port 0x80, where nothing is registered: 16-bit real mode, loaded at 0x1000.

    .code16
    .globl _start
_start:
    mov     $0x55, %al
    outb    %al, $0x80
    hlt
