# Exception injection: 64-bit long mode, loaded at 0x100000.
#
# Installs an interrupt gate for the breakpoint exception (#BP, vector 3), writes 1 to port
# 0x500 to say it is ready, and spins. Only an exception the host injects gets it out: the
# handler writes the vector to the debug-exit port (0xf4), which ends the run.

    .code64
    .globl _start
_start:
    lea     handler(%rip), %rax
    lea     idt + 3 * 16(%rip), %rdi
    mov     %ax, (%rdi)             # offset 15:0
    movw    $0x08, 2(%rdi)          # kvmkit's 64-bit code segment
    movw    $0x8e00, 4(%rdi)        # present, ring 0, interrupt gate
    shr     $16, %rax
    mov     %ax, 6(%rdi)            # offset 31:16
    shr     $16, %rax
    mov     %eax, 8(%rdi)           # offset 63:32
    lidt    idtr(%rip)

    mov     $0x500, %dx
    mov     $1, %al
    outb    %al, %dx                # ready
1:  jmp     1b

handler:
    mov     $3, %al
    outb    %al, $0xf4
    iretq

    .balign 16
idtr:
    .word   256 * 16 - 1
    .quad   idt
    .balign 16
idt:
    .fill   256 * 16, 1, 0
