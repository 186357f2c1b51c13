# More of what a software-assisted KVM's emulator gives up on: 64-bit long mode, loaded at
# 0x100000. Each step sets a bit of R15 (or a count in its low byte), and R15 goes to the
# debug-exit port (0xf4) at the end: 0xbf12 when all went right. Hardware virtualization
# runs all of it itself; a software-assisted KVM's emulator gives up on each of `int n`,
# xgetbv, clac/stac and clwb/clflushopt, and kvmkit finishes them instead.
#
#   low byte  `int $0x21` twice (+1 each) and `int $0x20` once (+0x10): 0x12
#   bit 8     xgetbv with ECX=0 read XCR0 as set with xsetbv (x87 | SSE)
#   bit 9     xgetbv with ECX=2 (no such register) raised #GP(0), whose handler skips it
#   bit 10    stac set RFLAGS.AC
#   bit 11    clac cleared it
#   bit 12    clwb and clflushopt (with SIB and RIP-relative operands) were passed over
#   bit 13    the #GP handler ran once (a count from bit 13)
#   bit 15    the guest went on after the #GP

    .include "idt64.inc"
    .code64
    .globl _start
_start:
    xor     %r15d, %r15d
    set_gate idt, 0x20, int20
    set_gate idt, 0x21, int21
    set_gate idt, 13, general_protection
    lidt    idt_ptr(%rip)

    int     $0x21
    int     $0x20
    int     $0x21

    mov     %cr4, %rax
    or      $(1 << 18 | 1 << 9), %rax   # OSXSAVE, OSFXSR
    mov     %rax, %cr4
    xor     %ecx, %ecx
    xor     %edx, %edx
    mov     $3, %eax                    # XCR0 = x87 | SSE
    xsetbv
    xor     %eax, %eax
    xgetbv
    cmp     $3, %eax
    jne     1f
    test    %edx, %edx
    jne     1f
    or      $(1 << 8), %r15d
1:
    mov     $2, %ecx
    xgetbv                              # #GP(0): the handler moves past it
    or      $(1 << 15), %r15d

    stac
    pushfq
    pop     %rax
    bt      $18, %rax
    jnc     2f
    or      $(1 << 10), %r15d
2:  clac
    pushfq
    pop     %rax
    bt      $18, %rax
    jc      3f
    or      $(1 << 11), %r15d
3:
    mov     $1, %ecx
    lea     line(%rip), %rbx
    clwb    (%rbx)
    clwb    0x40(%rbx,%rcx,4)
    clflushopt line(%rip)
    or      $(1 << 12), %r15d

    mov     %r15d, %eax
    outl    %eax, $0xf4
4:  jmp     4b

int20:
    add     $0x10, %r15d
    iretq
int21:
    inc     %r15d
    iretq

# The error code, then the faulting RIP: skip the 3-byte xgetbv.
general_protection:
    cmpq    $0, (%rsp)
    jne     5f
    or      $(1 << 9), %r15d
5:  add     $(1 << 13), %r15d
    addq    $3, 8(%rsp)
    add     $8, %rsp
    iretq

    .balign 64
line:
    .fill   128, 1, 0

    idt_table idt
