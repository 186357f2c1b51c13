# The exit-latency benchmark guest: one 32-bit kernel that kvmkit, the C baseline and QEMU
# all run, so every path measures the same instructions. Loaded at 0x100000; it runs in
# 32-bit protected mode with flat segments and no paging, and has three entry points:
#
#   0x100000   direct: the host sets EAX to the kind of exit and ESI (at least 1) to how many
#   _start     Multiboot v1 (QEMU `-machine pc -kernel`)
#   pvh_start  PVH (QEMU `-machine microvm -kernel`), found through its Xen ELF note
#
# Multiboot and PVH take the two parameters from the first boot module (`-initrd`): two
# little-endian 32-bit words, kind then count. The kinds:
#   0: out to port 0x5e0          1: in from port 0x5e0
#   2: write to MMIO at 0xd0000000   3: read from MMIO at 0xd0000000
#   4: cpuid, answered inside KVM (no exit to userspace: the floor)
# 0xd0000000 is outside guest RAM on every path (and unassigned in QEMU's microvm), so the
# MMIO accesses exit. When done it writes 0 to port 0xf4 (QEMU's isa-debug-exit, which ends
# QEMU) and halts.

    .set    MB_MAGIC, 0x1badb002
    .set    MB_FLAGS, 0
    .code32
    .text
    .globl  direct_start
direct_start:
    jmp     run

    .balign 4
multiboot_header:
    .long   MB_MAGIC
    .long   MB_FLAGS
    .long   -(MB_MAGIC + MB_FLAGS)

    .globl  _start
_start:
    mov     24(%ebx), %ecx          # multiboot_info.mods_addr
    mov     (%ecx), %ecx            # the first module's start
    jmp     params

    .pushsection .note.Xen, "a", @note
    .balign 4
    .long   4, 4, 18                # XEN_ELFNOTE_PHYS32_ENTRY
    .asciz  "Xen"
    .long   pvh_start
    .popsection

pvh_start:
    mov     16(%ebx), %ecx          # hvm_start_info.modlist_paddr
    mov     (%ecx), %ecx            # the first module's address

params:
    mov     (%ecx), %eax            # kind
    mov     4(%ecx), %esi           # count

run:
    mov     $0xd0000000, %edi
    mov     $0x5e0, %dx
    cmp     $1, %eax
    je      in_loop
    cmp     $2, %eax
    je      mmio_write
    cmp     $3, %eax
    je      mmio_read
    cmp     $4, %eax
    je      cpuid_loop

out_loop:
    outb    %al, %dx
    dec     %esi
    jnz     out_loop
    jmp     done

in_loop:
    inb     %dx, %al
    dec     %esi
    jnz     in_loop
    jmp     done

mmio_write:
    movb    %al, (%edi)
    dec     %esi
    jnz     mmio_write
    jmp     done

mmio_read:
    movb    (%edi), %al
    dec     %esi
    jnz     mmio_read
    jmp     done

cpuid_loop:
    xor     %eax, %eax
    cpuid
    dec     %esi
    jnz     cpuid_loop

done:
    xor     %al, %al
    outb    %al, $0xf4
    hlt
