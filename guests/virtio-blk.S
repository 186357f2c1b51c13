# virtio-blk: 64-bit long mode, loaded at 0x100000; needs irqchip, at least 4 MiB of RAM, a
# writable disk as the first virtio device (window 0xc0000000) and a read-only one as the
# second (0xc0001000), a debug console on 0xe9 and a debug exit on 0xf4. Works on any
# backend: it polls the used ring, with interrupts off.
#
# On the writable disk: negotiates VERSION_1 and FLUSH, reads sector 0 and prints its first
# 16 bytes, writes sector 1 (512 bytes of 'W') and reads it back, asks for the serial
# (GET_ID) and prints its 20 bytes, flushes. Then the hostile requests: an unknown type
# (UNSUPP), reads past the end and at a sector that overflows (IOERR), a chain with no
# status byte (returned with nothing written), a buffer outside RAM (IOERR); the device
# still serves a read after them. Discard, if offered (else it must be refused with
# UNSUPP): sector 5, then the hostile segments (past the end, over max_discard_sectors, the
# unmap flag, half a segment). Write-zeroes likewise: sector 4 (read back as zeroes), and
# sectors 6-7 with unmap, then the hostile segments (past the end, over
# max_write_zeroes_sectors, an unknown flag). Then a reset with a read in flight is followed
# by a clean start. On the read-only disk: RO is offered and neither trim, a read succeeds
# and a write fails with IOERR. Exits with 0x55 when all went as expected, else with the
# number of the check that failed (0x63: a request never came back).

    .include "virtio.inc"

    .set DISK_A, 0xc0000000
    .set DISK_B, 0xc0001000
    .set RING_A, 0x200000
    .set RING_B, 0x201000
    .set HDR, 0x210000
    .set DATA, 0x211000
    .set STATUS, 0x212000
    .set SEG, 0x213000
    .set QSIZE, 8

    .set F_SEG_MAX, 1 << 2
    .set F_RO, 1 << 5
    .set F_BLK_SIZE, 1 << 6
    .set F_FLUSH, 1 << 9
    .set F_DISCARD, 1 << 13
    .set F_WRITE_ZEROES, 1 << 14

    .set T_IN, 0
    .set T_OUT, 1
    .set T_FLUSH, 4
    .set T_GET_ID, 8
    .set T_DISCARD, 11
    .set T_WRITE_ZEROES, 13

    .set S_OK, 0
    .set S_IOERR, 1
    .set S_UNSUPP, 2

# A request of type \type at sector \sector with \len bytes at \buf (\flags: 0 for the
# device to read them, VIO_D_WRITE for it to write them; \len 0: no data descriptor);
# leaves the status byte in EAX and the used length in EBP.
.macro blk type, sector, buf, len, flags
    mov     $\type, %r15d
    mov     $\sector, %rbx
    mov     $\buf, %r12
    mov     $\len, %r13d
    mov     $\flags, %r14d
    call    blk_rw
.endm

# A discard or write-zeroes request (\type) of one segment: \count sectors from the sector
# in RAX, with \flags; \len bytes of it are given. Same results as blk.
.macro trim type, count, flags, len=16
    mov     %rax, SEG
    movl    \count, SEG + 8
    movl    $\flags, SEG + 12
    blk     \type, 0, SEG, \len, 0
.endm

    .code64
    .globl _start
_start:
    cli
    mov     $DISK_A, %rdi
    vio_identify 2
    movl    $0, VIO_FEATURES_SEL(%rdi)
    movl    VIO_FEATURES(%rdi), %eax
    test    $F_FLUSH, %eax
    check   nz, 2
    test    $F_BLK_SIZE, %eax
    check   nz, 2
    test    $F_SEG_MAX, %eax
    check   nz, 2
    test    $F_RO, %eax
    check   z, 2
    and     $F_DISCARD | F_WRITE_ZEROES, %eax   # taken when offered
    mov     %eax, trims
    mov     $VIO_F_VERSION_1 | F_FLUSH, %rsi
    or      %rax, %rsi
    call    vio_setup
    test    $VIO_S_FEATURES_OK, %eax
    check   nz, 3
    vio_queue_at 0, RING_A
    call    vio_driver_ok
    cmpl    $512, VIO_CONFIG + 20(%rdi)     # blk_size
    check   e, 3

    # Sector 0: its first 16 bytes go to the console.
    blk     T_IN, 0, DATA, 512, VIO_D_WRITE
    cmp     $S_OK, %eax
    check   e, 4
    cmp     $513, %ebp
    check   e, 4
    mov     $16, %ecx
    call    print_data

    # Sector 1 := 512 bytes of 'W', read back.
    mov     $DATA, %rdx
    call    fill_w
    mov     $RING_A, %rdx
    blk     T_OUT, 1, DATA, 512, 0
    cmp     $S_OK, %eax
    check   e, 5
    cmp     $1, %ebp
    check   e, 5
    blk     T_IN, 1, DATA + 0x200, 512, VIO_D_WRITE
    cmp     $S_OK, %eax
    check   e, 6
    cmpb    $'W', DATA + 0x200
    check   e, 6
    cmpb    $'W', DATA + 0x3ff
    check   e, 6

    # The serial.
    blk     T_GET_ID, 0, DATA, 20, VIO_D_WRITE
    cmp     $S_OK, %eax
    check   e, 7
    cmp     $21, %ebp
    check   e, 7
    mov     $20, %ecx
    call    print_data

    blk     T_FLUSH, 0, 0, 0, 0
    cmp     $S_OK, %eax
    check   e, 8

    # Hostile requests.
    blk     0x99, 0, 0, 0, 0
    cmp     $S_UNSUPP, %eax
    check   e, 9
    mov     VIO_CONFIG(%rdi), %rax          # capacity: the first sector past the end
    mov     %rax, capacity
    mov     $T_IN, %r15d
    mov     capacity, %rbx
    mov     $DATA, %r12
    mov     $512, %r13d
    mov     $VIO_D_WRITE, %r14d
    call    blk_rw
    cmp     $S_IOERR, %eax
    check   e, 10
    blk     T_IN, 0xffffffffffffffff, DATA, 1024, VIO_D_WRITE
    cmp     $S_IOERR, %eax
    check   e, 10

    # No status byte: header and a readable buffer, nothing writable.
    movl    $T_OUT, HDR
    movq    $0, HDR + 8
    movb    $0xff, STATUS
    xor     %esi, %esi
    mov     $HDR, %r8
    mov     $16, %r9d
    mov     $VIO_D_NEXT, %r10w
    mov     $1, %r11w
    call    vio_desc
    mov     $1, %esi
    mov     $DATA, %r8
    mov     $512, %r9d
    xor     %r10d, %r10d
    xor     %r11d, %r11d
    call    vio_desc
    call    post_and_wait
    cmp     $0xff, %eax
    check   e, 11
    cmp     $0, %ebp
    check   e, 11

    blk     T_IN, 0, 0x80000000, 512, VIO_D_WRITE
    cmp     $S_IOERR, %eax
    check   e, 12

    # The device goes on.
    testl   $VIO_S_NEEDS_RESET, VIO_STATUS(%rdi)
    check   z, 13
    blk     T_IN, 0, DATA, 512, VIO_D_WRITE
    cmp     $S_OK, %eax
    check   e, 13

    # Discard.
    mov     $5, %eax
    trim    T_DISCARD, $1, 0
    testl   $F_DISCARD, trims
    jnz     discard_offered
    cmp     $S_UNSUPP, %eax                 # not offered: refused
    check   e, 18
    jmp     write_zeroes
discard_offered:
    cmp     $S_OK, %eax
    check   e, 18
    mov     capacity, %rax
    dec     %rax
    trim    T_DISCARD, $2, 0
    cmp     $S_IOERR, %eax
    check   e, 19
    movl    VIO_CONFIG + 36(%rdi), %ecx     # max_discard_sectors
    inc     %ecx
    xor     %eax, %eax
    trim    T_DISCARD, %ecx, 0
    cmp     $S_IOERR, %eax
    check   e, 19
    xor     %eax, %eax
    trim    T_DISCARD, $1, 1
    cmp     $S_UNSUPP, %eax
    check   e, 19
    xor     %eax, %eax
    trim    T_DISCARD, $1, 0, 8
    cmp     $S_IOERR, %eax
    check   e, 19

write_zeroes:
    mov     $4, %eax
    trim    T_WRITE_ZEROES, $1, 0
    testl   $F_WRITE_ZEROES, trims
    jnz     write_zeroes_offered
    cmp     $S_UNSUPP, %eax
    check   e, 20
    jmp     trims_done
write_zeroes_offered:
    cmp     $S_OK, %eax
    check   e, 20
    movb    $0xff, DATA
    movb    $0xff, DATA + 0x1ff
    blk     T_IN, 4, DATA, 512, VIO_D_WRITE
    cmp     $S_OK, %eax
    check   e, 20
    cmpb    $0, DATA
    check   e, 20
    cmpb    $0, DATA + 0x1ff
    check   e, 20
    mov     $6, %eax
    trim    T_WRITE_ZEROES, $2, 1
    cmp     $S_OK, %eax
    check   e, 20
    mov     capacity, %rax
    dec     %rax
    trim    T_WRITE_ZEROES, $2, 0
    cmp     $S_IOERR, %eax
    check   e, 21
    movl    VIO_CONFIG + 48(%rdi), %ecx     # max_write_zeroes_sectors
    inc     %ecx
    xor     %eax, %eax
    trim    T_WRITE_ZEROES, %ecx, 0
    cmp     $S_IOERR, %eax
    check   e, 21
    xor     %eax, %eax
    trim    T_WRITE_ZEROES, $1, 2
    cmp     $S_UNSUPP, %eax
    check   e, 21
trims_done:
    # A reset with a read in flight, then the device set up again: whenever the read
    # completes, it must not land in the new queue.
    mov     $T_IN, %r15d
    xor     %ebx, %ebx
    mov     $DATA, %r12
    mov     $512, %r13d
    mov     $VIO_D_WRITE, %r14d
    call    blk_build
    xor     %esi, %esi
    mov     $QSIZE, %ecx
    xor     %r8d, %r8d
    call    vio_post
    movl    $0, VIO_STATUS(%rdi)
    vio_negotiate VIO_F_VERSION_1, 17
    vio_queue_at 0, RING_A
    call    vio_driver_ok
    blk     T_IN, 0, DATA, 512, VIO_D_WRITE
    cmp     $S_OK, %eax
    check   e, 17
    cmpw    $1, 0x202(%rdx)                 # the used index: this request only
    check   e, 17

    # The read-only disk.
    mov     $DISK_B, %rdi
    cmpl    $2, VIO_DEVICE_ID(%rdi)
    check   e, 14
    movl    $0, VIO_FEATURES_SEL(%rdi)
    testl   $F_RO, VIO_FEATURES(%rdi)
    check   nz, 14
    testl   $F_DISCARD | F_WRITE_ZEROES, VIO_FEATURES(%rdi)
    check   z, 14
    vio_negotiate VIO_F_VERSION_1 | F_RO, 14
    vio_queue_at 0, RING_B
    call    vio_driver_ok
    blk     T_IN, 0, DATA, 512, VIO_D_WRITE
    cmp     $S_OK, %eax
    check   e, 15
    blk     T_OUT, 0, DATA, 512, 0
    cmp     $S_IOERR, %eax
    check   e, 16

    mov     $0x55, %al
    outb    %al, $0xf4
    hlt

# The request the `blk` macro describes (type R15D, sector RBX, data R12 / R13D / flags
# R14W), on the device at RDI and ring area RDX, built in descriptors 0-2, posted and
# waited for.
blk_rw:
    call    blk_build
    jmp     post_and_wait

# Builds that request in descriptors 0-2.
blk_build:
    movl    %r15d, HDR
    movl    $0, HDR + 4
    mov     %rbx, HDR + 8
    movb    $0xff, STATUS
    xor     %esi, %esi
    mov     $HDR, %r8
    mov     $16, %r9d
    mov     $VIO_D_NEXT, %r10w
    mov     $2, %r11w
    test    %r13d, %r13d
    jz      1f
    mov     $1, %r11w
1:  call    vio_desc
    mov     $1, %esi
    mov     %r12, %r8
    mov     %r13d, %r9d
    mov     %r14w, %r10w
    or      $VIO_D_NEXT, %r10w
    mov     $2, %r11w
    call    vio_desc
    mov     $2, %esi
    mov     $STATUS, %r8
    mov     $1, %r9d
    mov     $VIO_D_WRITE, %r10w
    xor     %r11d, %r11d
    jmp     vio_desc

# Posts the chain at descriptor 0 and waits for it; EAX = the status byte, EBP = the used
# length. Exits with 0x63 if it never comes back.
post_and_wait:
    xor     %esi, %esi
    mov     $QSIZE, %ecx
    xor     %r8d, %r8d
    call    vio_post
    movzwl  0x102(%rdx), %ebx               # chains posted: the used index to wait for
    mov     $64, %ebp
1:  mov     %ebx, %eax
    call    vio_wait_used
    cmp     %ebx, %eax
    je      2f
    dec     %ebp
    jnz     1b
    mov     $0x63, %al
    outb    %al, $0xf4
    hlt
2:  lea     -1(%rax), %ecx
    and     $QSIZE - 1, %ecx
    movl    0x208(%rdx,%rcx,8), %ebp
    movzbl  STATUS, %eax
    ret

# Fills 512 bytes at RDX with 'W'.
fill_w:
    push    %rdi
    mov     %rdx, %rdi
    mov     $512, %ecx
    mov     $'W', %al
    rep stosb
    pop     %rdi
    ret

# Writes the first ECX bytes at DATA to the debug console.
print_data:
    push    %rdx
    mov     $DATA, %rsi
    mov     $0xe9, %dx
    rep outsb
    pop     %rdx
    ret

    virtio_driver

    .balign 8
capacity: .quad 0
trims:  .long 0                             # the trims offered (and taken)
