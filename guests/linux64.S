# A stand-in for a Linux kernel, entered through the x86 64-bit boot protocol: long mode,
# RSI pointing to the zero page. Linked as an ELF at 16 MiB (a "vmlinux") and, as a flat
# binary, placed at the 64-bit entry (offset 0x200) of a bzImage's protected-mode kernel;
# position-independent for that.
#
# It checks the zero page's "HdrS" magic and that its acpi_rsdp_addr points to an RSDP,
# prints the command line and then the number of e820 entries on COM1 (port 0x3f8, as an
# early console does), and powers off as an ACPI kernel does: SLP_TYP 5 (S5) with SLP_EN to the
# sleep control register the FADT names (port 0x600). If the zero page is wrong it ends the
# run through the debug-exit port (0xf4) with 0xbad instead.

    .include "console.inc"

    .code64
    .globl _start
_start:
    cmpl    $0x53726448, 0x202(%rsi)    # setup_header.header: "HdrS"
    jne     fail
    mov     %rsi, %rbx
    mov     0x70(%rbx), %rax            # boot_params.acpi_rsdp_addr
    movabs  $0x2052545020445352, %rcx   # "RSD PTR "
    cmp     %rcx, (%rax)
    jne     fail
    mov     0x228(%rbx), %esi           # setup_header.cmd_line_ptr
    mov     $0x3f8, %dx
    PRINT_STRING
    mov     $' ', %al
    outb    %al, %dx
    movzbl  0x1e8(%rbx), %eax           # boot_params.e820_entries
    add     $'0', %al
    outb    %al, %dx
    mov     $0x600, %dx
    mov     $((5 << 2) | (1 << 5)), %al
    outb    %al, %dx
    hlt
fail:
    mov     $0xf4, %dx
    mov     $0xbad, %eax
    outl    %eax, %dx
    hlt
