# MMIO exercise: 64-bit long mode, loaded at 0x100000.
#
# For each width (1, 2, 4, 8 bytes) reads the register at 0xd0000000 + 8*i and writes the
# value plus one to 0xd0000100 + 8*i, then halts.

    .code64
    .globl _start
_start:
    mov     $0xd0000000, %rsi
    mov     $0xd0000100, %rdi

    movb    0(%rsi), %al
    inc     %al
    movb    %al, 0(%rdi)

    movw    8(%rsi), %ax
    inc     %ax
    movw    %ax, 8(%rdi)

    movl    16(%rsi), %eax
    inc     %eax
    movl    %eax, 16(%rdi)

    movq    24(%rsi), %rax
    inc     %rax
    movq    %rax, 24(%rdi)
    hlt
