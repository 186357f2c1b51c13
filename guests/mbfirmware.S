# A Multiboot (v1) kernel that relies on what a PC BIOS leaves, as kernels loaded by QEMU's
# -kernel may: entered in flat 32-bit protected mode, it checks the real-mode interrupt
# table (vector 9, the keyboard's, leads into the BIOS segment F000) and the ACPI RSDP at
# 0xe0000, then starts the PIT (channel 0, rate generator) and waits with interrupts on,
# without programming the PICs itself. Every vector leads to a handler that ends the run
# through the debug-exit port (0xf4) with its vector: 8 when the PICs have the BIOS's
# vectors (IRQ 0 at 0x08), 0xbad if a check fails.

    .set    MAGIC, 0x1badb002
    .set    FLAGS, 0x2                  # memory information
    .set    IDT, 0x80000                # 256 gates of 8 bytes

    .code32
    .section .text
    .align  4
    .long   MAGIC
    .long   FLAGS
    .long   -(MAGIC + FLAGS)

    .globl  _start
_start:
    cli
    mov     $0x7c00, %esp               # Multiboot leaves ESP undefined
    mov     $0xf4, %dx
    mov     0x24, %eax                  # IVT entry 9: offset, segment
    shr     $16, %eax
    cmp     $0xf000, %eax
    jne     fail
    cmpl    $0x20445352, 0xe0000        # "RSD "
    jne     fail
    cmpl    $0x20525450, 0xe0004        # "PTR "
    jne     fail

    # The IDT: gate i leads to stubs + 16 * i, a 32-bit interrupt gate in this code segment.
    xor     %ecx, %ecx
    mov     %cs, %bx
    shl     $16, %ebx
1:  mov     %ecx, %eax
    shl     $4, %eax
    add     $stubs, %eax
    mov     %eax, %esi
    and     $0xffff, %esi
    or      %ebx, %esi
    mov     %esi, IDT(,%ecx,8)
    and     $0xffff0000, %eax
    or      $0x8e00, %eax
    mov     %eax, IDT + 4(,%ecx,8)
    inc     %ecx
    cmp     $256, %ecx
    jne     1b
    lidt    idt_pointer

    mov     $0x34, %al                  # PIT channel 0, low then high byte, mode 2
    outb    %al, $0x43
    mov     $0x00, %al
    outb    %al, $0x40
    mov     $0x10, %al                  # 4096 ticks of 1.19 MHz: ~3.4 ms
    outb    %al, $0x40
    sti
2:  hlt
    jmp     2b

fail:
    mov     $0xbad, %eax
    outl    %eax, %dx
    hlt

    .align  16
stubs:
    .set    vector, 0
    .rept   256
    .align  16
    .byte   0x68                        # push imm32
    .long   vector
    jmp     report
    .set    vector, vector + 1
    .endr

report:
    pop     %eax
    mov     $0xf4, %dx
    outl    %eax, %dx
    hlt

    .align  8
idt_pointer:
    .word   256 * 8 - 1
    .long   IDT
