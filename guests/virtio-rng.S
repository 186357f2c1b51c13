# virtio-mmio transport and virtio-rng: 64-bit long mode, loaded at 0x100000; needs irqchip,
# at least 4 MiB of RAM, the rng as the first virtio device (window 0xc0000000, GSI 5), a
# debug console on 0xe9 and a debug exit on 0xf4.
#
# Checks the device's identity, that features never offered (or without VERSION_1) are
# refused, that a request posted before DRIVER_OK is served once the driver is ready, with
# an interrupt; prints the 32 random bytes it got, resets, sets the device up again with
# EVENT_IDX and prints 32 more. Then the hostile cases: a buffer outside RAM (the request
# completes with nothing written, the device goes on), a queue size that is not a power of
# two, rings outside RAM (both set DEVICE_NEEDS_RESET, which a reset clears). Exits with
# 0x55 when all went as expected, else with the number of the check that failed.

    .include "idt64.inc"
    .include "virtio.inc"

    .set BASE, 0xc0000000
    .set GSI, 5
    .set RING, 0x200000
    .set BUF, 0x210000
    .set QSIZE, 8

    .code64
    .globl _start
_start:
    vio_irq_setup handler, GSI

    mov     $BASE, %rdi
    vio_identify 4

    # Feature bit 0 was never offered: FEATURES_OK is refused.
    mov     $VIO_F_VERSION_1 | 1, %rsi
    call    vio_setup
    test    $VIO_S_FEATURES_OK, %eax
    check z, 2
    # Nor may a driver go without VERSION_1 (the legacy interface).
    xor     %esi, %esi
    call    vio_setup
    test    $VIO_S_FEATURES_OK, %eax
    check z, 3

    # A request posted before DRIVER_OK waits for it.
    mov     $VIO_F_VERSION_1, %rsi
    call    vio_setup
    test    $VIO_S_FEATURES_OK, %eax
    check nz, 4
    call    request
    mov     $1, %eax
    call    vio_wait_used
    cmp     $0, %eax
    check e, 4
    call    vio_driver_ok
    mov     $1, %eax
    call    vio_wait_used
    cmp     $1, %eax
    check e, 5
    cmpl    $64, 0x208(%rdx)        # the used element's length
    check e, 6
    call    wait_irq
    testl   $1, irq_status(%rip)
    check nz, 7
    call    print_buf

    # A reset forgets the queue; the device comes back with EVENT_IDX.
    movl    $0, VIO_STATUS(%rdi)
    cmpl    $0, VIO_STATUS(%rdi)
    check e, 8
    movl    $0, VIO_QUEUE_SEL(%rdi)
    cmpl    $0, VIO_QUEUE_READY(%rdi)
    check e, 8
    mov     $VIO_F_VERSION_1 | VIO_F_EVENT_IDX, %rsi
    call    vio_setup
    test    $VIO_S_FEATURES_OK, %eax
    check nz, 8
    call    request
    call    vio_driver_ok
    mov     $1, %eax
    call    vio_wait_used
    cmp     $1, %eax
    check e, 8
    call    print_buf

    # A buffer outside RAM: the request completes empty, the device is not broken.
    mov     $RING, %rdx
    mov     $1, %esi
    mov     $0x80000000, %r8
    mov     $64, %r9d
    mov     $VIO_D_WRITE, %r10w
    xor     %r11d, %r11d
    call    vio_desc
    xor     %esi, %esi
    mov     $QSIZE, %ecx
    mov     $1, %r8w
    call    vio_post
    mov     $2, %eax
    call    vio_wait_used
    cmp     $2, %eax
    check e, 9
    cmpl    $0, 0x210(%rdx)         # the second used element's length
    check e, 9
    testl   $VIO_S_NEEDS_RESET, VIO_STATUS(%rdi)
    check z, 9

    # A queue size that is not a power of two breaks the device until a reset.
    mov     $VIO_F_VERSION_1, %rsi
    call    vio_setup
    movl    $0, VIO_QUEUE_SEL(%rdi)
    movl    $3, VIO_QUEUE_NUM(%rdi)
    testl   $VIO_S_NEEDS_RESET, VIO_STATUS(%rdi)
    check nz, 10
    movl    $0, VIO_STATUS(%rdi)
    cmpl    $0, VIO_STATUS(%rdi)
    check e, 10

    # Rings outside RAM are refused at DRIVER_OK.
    mov     $VIO_F_VERSION_1, %rsi
    call    vio_setup
    xor     %esi, %esi
    mov     $0x80000000, %rdx
    movl    %esi, VIO_QUEUE_SEL(%rdi)
    movl    $QSIZE, VIO_QUEUE_NUM(%rdi)
    movl    %edx, VIO_DESC_LO(%rdi)
    movl    %edx, VIO_AVAIL_LO(%rdi)
    movl    %edx, VIO_USED_LO(%rdi)
    movl    $1, VIO_QUEUE_READY(%rdi)
    call    vio_driver_ok
    testl   $VIO_S_NEEDS_RESET, VIO_STATUS(%rdi)
    check nz, 11
    movl    $0, VIO_STATUS(%rdi)

    mov     $0x55, %al
    outb    %al, $0xf4
    hlt

# Sets queue 0 up at RING and posts one 64-byte writable buffer at BUF (zeroed first).
# Leaves RDX at RING.
request:
    push    %rdi
    mov     $BUF, %rdi
    mov     $64, %ecx
    xor     %eax, %eax
    rep stosb
    pop     %rdi
    vio_queue_at 0, RING
    xor     %esi, %esi
    mov     $BUF, %r8
    mov     $64, %r9d
    mov     $VIO_D_WRITE, %r10w
    xor     %r11d, %r11d
    call    vio_desc
    mov     $QSIZE, %ecx
    xor     %r8d, %r8d
    call    vio_post
    ret

# Waits (bounded) for the interrupt handler to have run once.
wait_irq:
    mov     $200000, %ecx
1:  cmpl    $0, irq_count(%rip)
    jne     2f
    pause
    dec     %ecx
    jnz     1b
2:  ret

# Writes the first 32 bytes at BUF to the debug console.
print_buf:
    push    %rdx
    mov     $BUF, %rsi
    mov     $32, %ecx
    mov     $0xe9, %dx
    rep outsb
    pop     %rdx
    ret

handler:
    push    %rax
    push    %rdi
    mov     $BASE, %rdi
    movl    VIO_INT_STATUS(%rdi), %eax
    orl     %eax, irq_status(%rip)
    movl    %eax, VIO_INT_ACK(%rdi)
    incl    irq_count(%rip)
    call    lapic_eoi
    pop     %rdi
    pop     %rax
    iretq

    virtio_driver

    .balign 4
irq_status: .long 0
irq_count:  .long 0

    idt_table idt
