# virtio-console: 64-bit long mode, loaded at 0x100000; needs irqchip, at least 4 MiB of RAM,
# the console as the first virtio device (window 0xc0000000, GSI 5) and a debug exit on 0xf4.
#
# Checks the device's identity and sets up its receive and transmit queues; transmits
# "hello from hvc0\n" as one chain of two buffers, then gathers the host's input up to a
# newline that ends a receive buffer (at most 1 MiB, from RX_BUF on), posting one 64-byte
# receive buffer at a time (a reader far slower than the host's writes, which transmits
# nothing meanwhile), and transmits it back in one buffer. Waits for each used buffer with
# hlt (the device's interrupt wakes it). Exits with 0x55 when all went as expected, else
# with the number of the check that failed.

    .include "idt64.inc"
    .include "virtio.inc"

    .set BASE, 0xc0000000
    .set GSI, 5
    .set RX_RING, 0x200000
    .set TX_RING, 0x201000
    .set RX_BUF, 0x210000
    .set QSIZE, 8

    .code64
    .globl _start
_start:
    vio_irq_setup handler, GSI

    mov     $BASE, %rdi
    vio_identify 3
    vio_negotiate VIO_F_VERSION_1
    vio_queue_at 0, RX_RING
    vio_queue_at 1, TX_RING
    call    vio_driver_ok

    # "hello " and "from hvc0\n" as one chain: descriptors 0 -> 1.
    mov     $TX_RING, %rdx
    xor     %esi, %esi
    lea     hello(%rip), %r8
    mov     $6, %r9d
    mov     $VIO_D_NEXT, %r10w
    mov     $1, %r11w
    call    vio_desc
    mov     $1, %esi
    lea     hello+6(%rip), %r8
    mov     $10, %r9d
    xor     %r10d, %r10d
    xor     %r11d, %r11d
    call    vio_desc
    mov     $1, %esi
    mov     $QSIZE, %ecx
    xor     %r8d, %r8d
    call    vio_post
    mov     $1, %eax
    call    vio_sleep_used
    cmpl    $0, 0x208(%rdx)         # nothing written into a transmitted chain
    check e, 3

    # The host's input, gathered from RX_BUF on: one 64-byte receive buffer at a time, as
    # descriptor 0 of the receive ring, up to a newline that ends one. R12 counts the used
    # receive buffers, R14 is where the next one starts.
    xor     %r12d, %r12d
    mov     $RX_BUF, %r14
receive:
    mov     $RX_RING, %rdx
    xor     %esi, %esi
    mov     %r14, %r8
    mov     $64, %r9d
    mov     $VIO_D_WRITE, %r10w
    xor     %r11d, %r11d
    call    vio_desc
    xor     %r8d, %r8d
    mov     $QSIZE, %ecx
    call    vio_post
    inc     %r12d
    mov     %r12d, %eax
    call    vio_sleep_used
    lea     -1(%r12), %eax          # the bytes received, in the last used element
    and     $QSIZE - 1, %eax
    movl    0x208(%rdx,%rax,8), %ebx
    test    %ebx, %ebx
    check nz, 4
    cmp     $64, %ebx
    check be, 4
    add     %rbx, %r14
    cmpb    $'\n', -1(%r14)
    jne     receive

    # Send it all back: descriptor 2 of the transmit ring.
    mov     $TX_RING, %rdx
    mov     $2, %esi
    mov     $RX_BUF, %r8
    mov     %r14, %r9
    sub     %r8, %r9
    xor     %r10d, %r10d
    xor     %r11d, %r11d
    call    vio_desc
    mov     $1, %esi
    mov     $QSIZE, %ecx
    mov     $2, %r8w
    call    vio_post
    mov     $2, %eax
    call    vio_sleep_used

    mov     $0x55, %al
    outb    %al, $0xf4
    hlt

    vio_ack_handler handler, BASE

    virtio_driver

hello:  .ascii "hello from hvc0\n"

    idt_table idt
