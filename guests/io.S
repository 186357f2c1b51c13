# Port-I/O exercise: 16-bit real mode, loaded at 0x1000.
#
# Reads a byte, word and dword from port 0x60, 0x62, 0x64 and writes each back, plus one,
# to the same port; then copies four bytes from port 0x70 into memory with `rep insb` and
# writes them to port 0x71 with `rep outsb`, and halts.

    .code16
    .globl _start
_start:
    mov     $0x60, %dx
    inb     %dx, %al
    inc     %al
    outb    %al, %dx

    mov     $0x62, %dx
    inw     %dx, %ax
    inc     %ax
    outw    %ax, %dx

    mov     $0x64, %dx
    inl     %dx, %eax
    inc     %eax
    outl    %eax, %dx

    xor     %ax, %ax
    mov     %ax, %es
    mov     $buffer, %di
    mov     $4, %cx
    mov     $0x70, %dx
    cld
    rep insb

    mov     $buffer, %si
    mov     $4, %cx
    mov     $0x71, %dx
    rep outsb
    hlt

buffer:
    .fill   4, 1, 0
