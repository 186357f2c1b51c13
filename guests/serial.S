# The 16550 UART from the guest's side: 16-bit real mode, loaded at 0x1000. Polls the
# line-status register (no interrupts), transmits "hi:", receives bytes up to and including
# a newline (at most 64 KiB, kept from 0x10000 on: a reader far slower than the host's
# writes, which transmits nothing meanwhile), echoes them and halts.

    .code16
    .globl _start
_start:
    mov     $'h', %al
    call    putc
    mov     $'i', %al
    call    putc
    mov     $':', %al
    call    putc

    mov     $0x1000, %ax            # received bytes go to 0x10000 on (ES:DI)
    mov     %ax, %es
    xor     %di, %di
receive:
    mov     $0x3fd, %dx             # line status
1:  inb     %dx, %al
    test    $0x01, %al              # data ready?
    jz      1b
    mov     $0x3f8, %dx             # receive buffer
    inb     %dx, %al
    stosb
    cmp     $'\n', %al
    jne     receive

    xor     %si, %si                # then echo them
echo:
    mov     %es:(%si), %al
    inc     %si
    call    putc
    cmp     %si, %di
    jne     echo
    hlt

# Transmits AL once the transmit holding register is empty.
putc:
    mov     %al, %ah
    mov     $0x3fd, %dx
2:  inb     %dx, %al
    test    $0x20, %al              # THR empty?
    jz      2b
    mov     $0x3f8, %dx
    mov     %ah, %al
    outb    %al, %dx
    ret
