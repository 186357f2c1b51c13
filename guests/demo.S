# The demo guest: 64-bit long mode, loaded at 0x100000.
#
# It greets through a TypeScript console device (port 0x3f8), asks a TypeScript device for
# a number (port 0x510), prints that number in decimal through the Rust built-in debug
# console (port 0xe9), writes a 64-bit value to a TypeScript MMIO register (0xd0000000),
# and halts.

    .code64
    .globl _start
_start:
    lea     greeting(%rip), %rsi
    mov     $(greeting_end - greeting), %ecx
    mov     $0x3f8, %dx
1:  lodsb
    outb    %al, %dx
    loop    1b

    mov     $0x510, %dx             # the answer device
    inl     %dx, %eax

    lea     digits_end(%rip), %rdi  # convert eax to decimal, right to left
    mov     $10, %ebx
2:  xor     %edx, %edx
    div     %ebx
    add     $'0', %dl
    dec     %rdi
    mov     %dl, (%rdi)
    test    %eax, %eax
    jnz     2b
    lea     digits_end(%rip), %rcx
    sub     %rdi, %rcx
    mov     %rdi, %rsi
    mov     $0xe9, %dx              # the built-in debug console
    rep outsb
    mov     $'\n', %al
    outb    %al, %dx

    mov     $0xd0000000, %rax       # a 64-bit MMIO register
    movabs  $0x1122334455667788, %rbx
    mov     %rbx, (%rax)
    hlt

greeting:
    .ascii  "Hello from a kvmkit guest!\n"
greeting_end:
digits:
    .fill   10, 1, 0
digits_end:
