# virtio-vsock: 64-bit long mode, loaded at 0x100000; needs irqchip, at least 4 MiB of RAM,
# the vsock device (guest CID 3) as the first virtio device (window 0xc0000000), a debug
# console on 0xe9 and a debug exit on 0xf4. Polls the used rings (interrupts stay off).
#
# Checks the device's identity and CID, sets up its RX, TX and event queues, connects from
# guest port 1000 to host port 1234 (CID 2), sends "hello, vsock" and prints what comes back
# to the debug console, then shuts the connection down and waits for the host's reset.
# Then it takes a connection from the host to its port 5000, echoes what comes, and when the
# host is done sending shuts down too. Then the hostile part: data for a connection that does
# not exist and an unknown operation (each answered with a reset), and a header whose length
# its buffer does not hold (returned unread, the device not broken). Last, it connects to
# host port 1235, whose listener then connects to the guest's port 6000: the guest never
# answers that request and waits for the host to give up on it (a reset for it); if nothing
# listens on 1235, it skips this part. Exits with 0x55 when all went as expected, else with
# the number of the check that failed.

    .include "virtio.inc"

    .set BASE, 0xc0000000
    .set RXQ, 0x200000
    .set TXQ, 0x201000
    .set EVQ, 0x202000
    .set RXH, 0x210000              # RX chain k: header at RXH + k * 0x40,
    .set RXD, 0x220000              # data at RXD + k * 0x1000
    .set TXH, 0x230000
    .set TXD, 0x231000
    .set EVB, 0x240000
    .set QSIZE, 8
    .set NRX, 4
    .set HOST_PORT, 1234
    .set MY_PORT, 1000
    .set LISTEN_PORT, 5000
    .set ASK_PORT, 1235             # the host connects to IGNORED_PORT when this is connected to
    .set IGNORED_PORT, 6000

    .set OP_REQUEST, 1
    .set OP_RESPONSE, 2
    .set OP_RST, 3
    .set OP_SHUTDOWN, 4
    .set OP_RW, 5
    .set OP_CREDIT_UPDATE, 6

    # Header fields.
    .set H_SRC_PORT, 16
    .set H_DST_PORT, 20
    .set H_LEN, 24
    .set H_OP, 30

# Checks that the packet at RBX (from recv) is operation `op` for guest port `port`, else
# fails check `code`; with `keep`, stores its source port (the host's) in that variable,
# clobbering EAX.
.macro vsock_expect op, port, code, keep
    cmpw    $\op, H_OP(%rbx)
    check e, \code
    cmpl    $\port, H_DST_PORT(%rbx)
    check e, \code
.ifnb \keep
    mov     H_SRC_PORT(%rbx), %eax
    mov     %eax, \keep(%rip)
.endif
.endm

    .code64
    .globl _start
_start:
    cli
    mov     $BASE, %rdi
    vio_identify 19
    cmpl    $3, VIO_CONFIG(%rdi)    # guest_cid, 64 bits
    check e, 1
    cmpl    $0, VIO_CONFIG+4(%rdi)
    check e, 1

    vio_negotiate VIO_F_VERSION_1
    vio_queue_at 0, RXQ
    vio_queue_at 1, TXQ
    vio_queue_at 2, EVQ

    # RX chains: descriptor 2k the header, 2k + 1 the data.
    xor     %ebx, %ebx
1:  mov     $RXQ, %rdx
    lea     (%rbx,%rbx), %esi
    mov     %rbx, %r8
    shl     $6, %r8
    add     $RXH, %r8
    mov     $44, %r9d
    mov     $VIO_D_NEXT | VIO_D_WRITE, %r10w
    lea     1(%rsi), %r11d
    call    vio_desc
    inc     %esi
    mov     %rbx, %r8
    shl     $12, %r8
    add     $RXD, %r8
    mov     $0x1000, %r9d
    mov     $VIO_D_WRITE, %r10w
    xor     %r11d, %r11d
    call    vio_desc
    lea     (%rbx,%rbx), %r8d
    call    post_rx
    inc     %ebx
    cmp     $NRX, %ebx
    jb      1b
    # One event buffer.
    mov     $EVQ, %rdx
    xor     %esi, %esi
    mov     $EVB, %r8
    mov     $4, %r9d
    mov     $VIO_D_WRITE, %r10w
    xor     %r11d, %r11d
    call    vio_desc
    mov     $2, %esi
    mov     $QSIZE, %ecx
    xor     %r8d, %r8d
    call    vio_post
    call    vio_driver_ok

    # Connect: REQUEST, answered by RESPONSE with the ports swapped.
    mov     $OP_REQUEST, %eax
    mov     $MY_PORT, %ebx
    xor     %r13d, %r13d
    call    send
    call    recv
    cmpw    $OP_RESPONSE, H_OP(%rbx)
    check e, 3
    cmpl    $HOST_PORT, H_SRC_PORT(%rbx)
    check e, 3
    cmpl    $MY_PORT, H_DST_PORT(%rbx)
    check e, 3
    call    repost

    # Payload out; print what comes back until as much came.
    lea     message(%rip), %rsi
    mov     $TXD, %rdi
    mov     $message_end - message, %ecx
    rep movsb
    mov     $BASE, %rdi
    mov     $OP_RW, %eax
    mov     $MY_PORT, %ebx
    mov     $message_end - message, %r13d
    call    send
2:  call    recv
    cmpw    $OP_CREDIT_UPDATE, H_OP(%rbx)
    je      3f
    cmpw    $OP_RW, H_OP(%rbx)
    check e, 4
    mov     H_LEN(%rbx), %ecx
    add     %ecx, received(%rip)
    mov     %rbp, %rsi
    mov     $0xe9, %dx
    rep outsb
3:  call    repost
    cmpl    $message_end - message, received(%rip)
    jb      2b

    # Shut both ways down: the host answers with a reset once it has everything.
    mov     $OP_SHUTDOWN, %eax
    mov     $MY_PORT, %ebx
    xor     %r13d, %r13d
    movl    $3, flags(%rip)
    call    send
    movl    $0, flags(%rip)
4:  call    recv
    movzwl  H_OP(%rbx), %eax
    call    repost
    cmp     $OP_RST, %eax
    je      5f
    cmp     $OP_RST, %eax           # a credit update or the host's shutdown may come first
    check a, 5
    jmp     4b
5:
    # The host connects to port 5000: accept, echo one packet's payload, and shut down once
    # the host has.
    call    recv
    vsock_expect OP_REQUEST, LISTEN_PORT, 9, keep=peer
    movl    $0, received(%rip)      # the new connection's fwd_cnt
    call    repost
    mov     $OP_RESPONSE, %eax
    mov     $LISTEN_PORT, %ebx
    xor     %r13d, %r13d
    call    send
6:  call    recv
    cmpw    $OP_CREDIT_UPDATE, H_OP(%rbx)
    je      7f
    cmpw    $OP_RW, H_OP(%rbx)
    check e, 10
    mov     H_LEN(%rbx), %r13d
    cmp     $16, %r13d
    check be, 10
    mov     %rbp, %rsi
    push    %rdi
    mov     $TXD, %rdi
    mov     %r13d, %ecx
    rep movsb
    pop     %rdi
    add     %r13d, received(%rip)
    call    repost
    mov     $OP_RW, %eax
    mov     $LISTEN_PORT, %ebx
    call    send
    jmp     8f
7:  call    repost
    jmp     6b
8:  call    recv
    movzwl  H_OP(%rbx), %eax
    call    repost
    cmp     $OP_SHUTDOWN, %eax
    je      9f
    cmp     $OP_CREDIT_UPDATE, %eax
    check e, 11
    jmp     8b
9:  mov     $OP_SHUTDOWN, %eax
    mov     $LISTEN_PORT, %ebx
    xor     %r13d, %r13d
    movl    $3, flags(%rip)
    call    send
    movl    $0, flags(%rip)
    call    recv
    cmpw    $OP_RST, H_OP(%rbx)
    check e, 12
    call    repost
    movl    $HOST_PORT, peer(%rip)

    # Data for a connection that does not exist: reset.
    mov     $OP_RW, %eax
    mov     $2000, %ebx
    mov     $1, %r13d
    call    send
    call    recv
    vsock_expect OP_RST, 2000, 6
    call    repost
    # An operation that does not exist: reset.
    mov     $99, %eax
    mov     $2001, %ebx
    xor     %r13d, %r13d
    call    send
    call    recv
    vsock_expect OP_RST, 2001, 7
    call    repost
    # A length its buffer does not hold: the chain comes back, the device works on.
    mov     $OP_RW, %eax
    mov     $2002, %ebx
    mov     $60000, %r13d
    call    send
    testl   $VIO_S_NEEDS_RESET, VIO_STATUS(%rdi)
    check z, 8

    # A request from the host that is never answered: the host times out and resets it.
    movl    $ASK_PORT, peer(%rip)
    movl    $0, received(%rip)
    mov     $OP_REQUEST, %eax
    mov     $MY_PORT + 1, %ebx
    xor     %r13d, %r13d
    call    send
    call    recv
    movzwl  H_OP(%rbx), %eax
    call    repost
    cmp     $OP_RST, %eax           # nobody listens on 1235 (the host test through <uds>)
    je      unanswered_done
    cmp     $OP_RESPONSE, %eax
    check e, 13
    call    recv_long
    vsock_expect OP_REQUEST, IGNORED_PORT, 14, keep=ignored
    call    repost
    call    recv_long
    vsock_expect OP_RST, IGNORED_PORT, 15
    mov     ignored(%rip), %eax
    cmp     %eax, H_SRC_PORT(%rbx)
    check e, 15
unanswered_done:
    mov     $0x55, %al
    outb    %al, $0xf4
    hlt

# Sends a packet from guest port EBX to host port `peer` at CID 2: op EAX, R13D bytes of payload
# from TXD (the data descriptor holds at most 16 bytes: a longer length is a lie), the
# `flags` variable; waits (bounded) for the device to take it. Clobbers RAX, RCX, RDX,
# R8-R11, RSI.
send:
    mov     $TXH, %rsi
    movw    %ax, 30(%rsi)           # op
    movq    $3, (%rsi)              # src_cid
    movq    $2, 8(%rsi)             # dst_cid
    movl    %ebx, 16(%rsi)
    mov     peer(%rip), %eax
    movl    %eax, 20(%rsi)
    movl    %r13d, 24(%rsi)         # len
    movw    $1, 28(%rsi)            # type: stream
    mov     flags(%rip), %eax
    movl    %eax, 32(%rsi)
    movl    $0x10000, 36(%rsi)      # buf_alloc
    mov     received(%rip), %eax
    movl    %eax, 40(%rsi)          # fwd_cnt: everything received is consumed
    mov     $TXQ, %rdx
    xor     %esi, %esi
    mov     $TXH, %r8
    mov     $44, %r9d
    xor     %r10d, %r10d
    test    %r13d, %r13d
    jz      1f
    mov     $VIO_D_NEXT, %r10w
1:  mov     $1, %r11d
    call    vio_desc
    mov     $1, %esi
    mov     $TXD, %r8
    mov     $16, %r9d
    cmp     %r9d, %r13d
    cmovb   %r13d, %r9d
    xor     %r10d, %r10d
    xor     %r11d, %r11d
    call    vio_desc
    mov     $1, %esi
    mov     $QSIZE, %ecx
    xor     %r8d, %r8d
    call    vio_post
    incl    sent(%rip)
    mov     sent(%rip), %eax
    call    vio_wait_used
    cmp     sent(%rip), %eax
    check e, 20
    ret

# Waits (bounded) for the next RX packet: RBX its header, RBP its data, `rx_id` its chain.
# recv_long waits 200 times longer, for what the host sends only after a timeout of its own.
# Clobbers RAX, RCX.
recv_long:
    mov     $400000000, %ecx
    jmp     1f
recv:
    mov     $2000000, %ecx
1:  movzwl  RXQ + 0x202, %eax
    cmp     rx_seen(%rip), %ax
    jne     2f
    pause
    dec     %ecx
    jnz     1b
    mov     $21, %al
    outb    %al, $0xf4
    hlt
2:  movzwl  rx_seen(%rip), %eax
    and     $QSIZE - 1, %eax
    mov     RXQ + 0x204(,%rax,8), %eax
    mov     %eax, rx_id(%rip)
    shr     $1, %eax
    mov     %rax, %rbx
    shl     $6, %rbx
    add     $RXH, %rbx
    mov     %rax, %rbp
    shl     $12, %rbp
    add     $RXD, %rbp
    incw    rx_seen(%rip)
    ret

# Gives the last received chain back to the device. Clobbers R8-R11, RCX, RDX, RSI.
repost:
    push    %rax
    mov     rx_id(%rip), %r8d
    call    post_rx
    pop     %rax
    ret

# Posts RX chain head R8W. Clobbers RAX, RCX, RDX, RSI, R9.
post_rx:
    mov     $RXQ, %rdx
    xor     %esi, %esi
    mov     $QSIZE, %ecx
    call    vio_post
    ret

    virtio_driver

message:    .ascii "hello, vsock"
message_end:
    .balign 4
sent:       .long 0
received:   .long 0
flags:      .long 0
rx_id:      .long 0
ignored:    .long 0
peer:       .long HOST_PORT
rx_seen:    .word 0
