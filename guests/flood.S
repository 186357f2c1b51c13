# A guest that floods COM1 and never stops: 16-bit real mode, loaded at 0x1000. Fills
# 4 KiB at 0x2000 with 'x', then sends it to the transmit register with `rep outsb`,
# forever, counting the rounds in the 32-bit word at 0x500. It never waits for the
# line-status register: a UART whose output nobody reads must not stop it.

    .code16
    .globl _start
_start:
    cld
    movl    $0, 0x500
    mov     $0x2000, %di
    mov     $0x1000, %cx
    mov     $'x', %al
    rep stosb
1:  mov     $0x3f8, %dx
    mov     $0x2000, %si
    mov     $0x1000, %cx
    rep outsb
    addl    $1, 0x500
    jmp     1b
