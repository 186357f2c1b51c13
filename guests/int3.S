# What a software-assisted KVM's emulator gives up on: 64-bit long mode, loaded at 0x100000.
# Executes `fwait`; installs an interrupt gate for #BP (vector 3), whose handler counts in
# R15, and executes `int3`; loads MXCSR from memory with flush-to-zero set (`ldmxcsr`) and
# stores it back (`stmxcsr`); then writes the stored MXCSR plus the handler's count << 16
# to the debug-exit port (0xf4): 0x19f80 when all went right. Hardware virtualization runs
# all of it itself; a software-assisted KVM's emulator gives up on each, and kvmkit
# finishes them instead.

    .include "idt64.inc"
    .code64
    .globl _start
_start:
    xor     %r15d, %r15d
    fwait
    set_gate idt, 3, handler
    lidt    idt_ptr(%rip)
    int3
    movl    $0x9f80, -8(%rsp)           # MXCSR's default, 0x1f80, with FZ
    ldmxcsr -8(%rsp)
    stmxcsr -4(%rsp)
    mov     -4(%rsp), %eax
    shl     $16, %r15d
    add     %r15d, %eax
    outl    %eax, $0xf4
1:  jmp     1b

handler:
    inc     %r15d
    iretq

    idt_table idt
