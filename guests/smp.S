# Every vCPU runs this: 64-bit long mode, loaded at 0x100000. Each writes its initial APIC
# ID (CPUID leaf 1, EBX[31:24]) to port 0x600 and halts.

    .code64
    .globl _start
_start:
    mov     $1, %eax
    cpuid
    shr     $24, %ebx
    mov     %ebx, %eax
    mov     $0x600, %dx
    outl    %eax, %dx
    hlt
