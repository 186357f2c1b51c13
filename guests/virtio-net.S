# virtio-net: 64-bit long mode, loaded at 0x100000; needs irqchip, at least 4 MiB of RAM, the
# network device as the first virtio device (window 0xc0000000, GSI 5) and a debug exit on
# 0xf4.
#
# Negotiates MAC and STATUS, checks the link is up and reads its MAC address. Transmits a
# runt (a header and 4 bytes: the device must drop it and go on), then an ARP request
# "who has 10.0.0.1? tell 10.0.0.2" to the broadcast address. Then takes up to 32 frames:
# a broadcast is answered with its own payload sent back to its source, a frame for this
# MAC ends the guest with 0x55 (success), others (multicast) are ignored. Any other exit
# status is the number of the check that failed.

    .include "idt64.inc"
    .include "virtio.inc"

    .set BASE, 0xc0000000
    .set GSI, 5
    .set RX_RING, 0x200000
    .set TX_RING, 0x201000
    .set RX_BUF, 0x210000           # header + frame, 2 KiB
    .set TX_BUF, 0x211000
    .set QSIZE, 8
    .set HDR, 12
    .set F_MAC, 1 << 5
    .set F_STATUS, 1 << 16

    .code64
    .globl _start
_start:
    vio_irq_setup handler, GSI

    mov     $BASE, %rdi
    vio_identify 1
    vio_negotiate VIO_F_VERSION_1 | F_MAC | F_STATUS
    testw   $1, VIO_CONFIG + 6(%rdi)   # VIRTIO_NET_S_LINK_UP
    check nz, 3
    # The MAC address, a byte at a time as the configuration space allows.
    xor     %ecx, %ecx
    lea     mac(%rip), %rsi
1:  movb    VIO_CONFIG(%rdi,%rcx), %al
    movb    %al, (%rsi,%rcx)
    inc     %ecx
    cmp     $6, %ecx
    jne     1b

    vio_queue_at 0, RX_RING
    vio_queue_at 1, TX_RING
    call    vio_driver_ok
    call    post_rx

    # A runt: completes, and the device goes on.
    mov     $HDR + 4, %ebx
    call    transmit
    cmpl    $0, 0x208(%rdx)         # nothing written into a transmitted chain
    check e, 4

    # The ARP request, from this MAC to everyone.
    mov     $TX_BUF, %rax
    movl    $0, (%rax)              # the header: all zero
    movl    $0, 4(%rax)
    movl    $0, 8(%rax)
    movl    $0xffffffff, HDR(%rax)  # destination: broadcast
    movw    $0xffff, HDR + 4(%rax)
    lea     HDR + 6(%rax), %rdi
    call    put_mac                 # source
    lea     arp(%rip), %rsi
    lea     HDR + 12(%rax), %rdi
    mov     $arp_end - arp, %ecx
    rep movsb                       # type and ARP body up to the sender's address
    lea     HDR + 22(%rax), %rdi
    call    put_mac                 # sender hardware address
    lea     arp_tail(%rip), %rsi
    lea     HDR + 28(%rax), %rdi
    mov     $arp_tail_end - arp_tail, %ecx
    rep movsb
    mov     $HDR + 42, %ebx
    call    transmit

    mov     $32, %r15d              # frames to look at before giving up
next_frame:
    mov     rx_used(%rip), %eax
    inc     %eax
    mov     $RX_RING, %rdx
    call    vio_sleep_used
    mov     rx_used(%rip), %eax
    incl    rx_used(%rip)
    and     $QSIZE - 1, %eax
    movl    0x208(%rdx,%rax,8), %ebx   # the used element's length: header + frame
    cmp     $HDR + 14, %ebx
    check ae, 5
    mov     $RX_BUF + HDR, %rsi
    # For this MAC?
    lea     mac(%rip), %rdi
    mov     $6, %ecx
    push    %rsi
    repe cmpsb
    pop     %rsi
    jne     1f
    mov     $0x55, %al
    outb    %al, $0xf4
    hlt
1:  # Broadcast?
    cmpl    $0xffffffff, (%rsi)
    jne     2f
    cmpw    $0xffff, 4(%rsi)
    jne     2f
    # Send its payload back to its source, from this MAC.
    mov     $TX_BUF, %rdi
    mov     $RX_BUF, %rsi
    mov     %ebx, %ecx
    rep movsb
    mov     $TX_BUF, %rax
    mov     RX_BUF + HDR + 6, %ecx
    mov     %ecx, HDR(%rax)
    movw    RX_BUF + HDR + 10, %cx
    movw    %cx, HDR + 4(%rax)
    lea     HDR + 6(%rax), %rdi
    call    put_mac
    call    transmit
2:  call    post_rx
    dec     %r15d
    jnz     next_frame
    mov     $6, %al
    outb    %al, $0xf4
    hlt

# Copies the MAC address to RDI. Clobbers RCX, RSI.
put_mac:
    push    %rdi
    lea     mac(%rip), %rsi
    mov     $6, %ecx
    rep movsb
    pop     %rdi
    ret

# Transmits the EBX bytes at TX_BUF (descriptor 0 of the transmit ring) and waits until
# the device has used them.
transmit:
    push    %rdi
    mov     $BASE, %rdi
    mov     $TX_RING, %rdx
    xor     %esi, %esi
    mov     $TX_BUF, %r8
    mov     %ebx, %r9d
    xor     %r10d, %r10d
    xor     %r11d, %r11d
    call    vio_desc
    mov     $1, %esi
    mov     $QSIZE, %ecx
    xor     %r8d, %r8d
    call    vio_post
    incl    tx_used(%rip)
    mov     tx_used(%rip), %eax
    call    vio_sleep_used
    pop     %rdi
    ret

# Posts RX_BUF (descriptor 0 of the receive ring, 2 KiB) for the next frame.
post_rx:
    push    %rdi
    mov     $BASE, %rdi
    mov     $RX_RING, %rdx
    xor     %esi, %esi
    mov     $RX_BUF, %r8
    mov     $2048, %r9d
    mov     $VIO_D_WRITE, %r10w
    xor     %r11d, %r11d
    call    vio_desc
    xor     %esi, %esi
    mov     $QSIZE, %ecx
    xor     %r8d, %r8d
    call    vio_post
    pop     %rdi
    ret

    vio_ack_handler handler, BASE

    virtio_driver

# EtherType ARP; Ethernet, IPv4, 6- and 4-byte addresses, a request.
arp:        .byte 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1
arp_end:
# Sender 10.0.0.2, target hardware address unknown, target 10.0.0.1.
arp_tail:   .byte 10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1
arp_tail_end:

    .balign 4
rx_used:    .long 0
tx_used:    .long 0
mac:        .fill 8, 1, 0

    idt_table idt
