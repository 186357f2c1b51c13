# A Multiboot (v1) kernel, as QEMU's -kernel loads them: a 32-bit ELF linked at 1 MiB,
# entered in flat 32-bit protected mode with EAX = 0x2BADB002 and EBX pointing to the
# multiboot information.
#
# It prints through the debug console (port 0xe9) the command line, a space, and the
# contents of its first module (a text file, printed up to its end), then ends the run
# through the debug-exit port (0xf4) with mem_upper (KiB of RAM above 1 MiB), or 0xbad if
# the magic or the information's flags are wrong.

    .set    MAGIC, 0x1badb002
    .set    FLAGS, 0x3                  # page-aligned modules, memory information
    .set    MEM, 1 << 0                 # info flags: mem_lower/mem_upper valid,
    .set    CMDLINE, 1 << 2             # cmdline valid,
    .set    MODS, 1 << 3                # mods_count/mods_addr valid

    .include "console.inc"

    .code32
    .section .text
    .align  4
    .long   MAGIC
    .long   FLAGS
    .long   -(MAGIC + FLAGS)

    .globl  _start
_start:
    mov     $0xf4, %dx
    cmp     $0x2badb002, %eax
    jne     fail
    mov     (%ebx), %eax
    and     $(MEM | CMDLINE | MODS), %eax
    cmp     $(MEM | CMDLINE | MODS), %eax
    jne     fail
    mov     $0xe9, %dx
    mov     16(%ebx), %esi              # cmdline
    PRINT_STRING
    mov     $' ', %al
    outb    %al, %dx
    cmpl    $0, 20(%ebx)                # mods_count
    je      4f
    mov     24(%ebx), %edi              # mods_addr: { mod_start, mod_end, string, reserved }
    mov     (%edi), %esi
    mov     4(%edi), %ecx
    sub     %esi, %ecx
    rep outsb
4:  mov     $0xf4, %dx
    mov     8(%ebx), %eax               # mem_upper
    outl    %eax, %dx
    hlt
fail:
    mov     $0xbad, %eax
    outl    %eax, %dx
    hlt
