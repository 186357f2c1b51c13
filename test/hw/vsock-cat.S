# vsock-cat CID PORT: the test initramfs's AF_VSOCK client (busybox has none; see
# scripts/fixtures.sh, which assembles it into a static x86-64 Linux program). It connects
# to PORT on CID, copies its standard input there until end of file, shuts down its
# sending side, then copies what comes back to its standard output until the peer closes.
# Exit status: 0, 2 on bad arguments, or the errno of the system call that failed.

        .set SYS_read, 0
        .set SYS_write, 1
        .set SYS_socket, 41
        .set SYS_connect, 42
        .set SYS_shutdown, 48
        .set SYS_exit, 60
        .set AF_VSOCK, 40
        .set SOCK_STREAM, 1
        .set SHUT_WR, 1

        .globl _start
        .text
_start:
        cmpq    $3, (%rsp)              # argc
        jne     usage
        mov     16(%rsp), %rdi          # argv[1]: the CID
        call    parse
        mov     %eax, address+8(%rip)   # svm_cid
        mov     24(%rsp), %rdi          # argv[2]: the port
        call    parse
        mov     %eax, address+4(%rip)   # svm_port

        mov     $SYS_socket, %eax
        mov     $AF_VSOCK, %edi
        mov     $SOCK_STREAM, %esi
        xor     %edx, %edx
        syscall
        test    %rax, %rax
        js      fail
        mov     %rax, %r12              # the socket

        mov     $SYS_connect, %eax
        mov     %r12, %rdi
        lea     address(%rip), %rsi
        mov     $16, %edx               # sizeof(struct sockaddr_vm)
        syscall
        test    %rax, %rax
        js      fail

        xor     %edi, %edi              # standard input to the socket
        mov     %r12, %r13
        call    copy
        mov     $SYS_shutdown, %eax
        mov     %r12, %rdi
        mov     $SHUT_WR, %esi
        syscall
        test    %rax, %rax
        js      fail
        mov     %r12, %rdi              # the socket to standard output
        mov     $1, %r13d
        call    copy
        xor     %edi, %edi
        mov     $SYS_exit, %eax
        syscall

# Copies from file descriptor %rdi to %r13 until end of file; leaves through fail on an error.
copy:
        mov     %rdi, %r14
1:      mov     $SYS_read, %eax
        mov     %r14, %rdi
        lea     buffer(%rip), %rsi
        mov     $4096, %edx
        syscall
        test    %rax, %rax
        js      fail
        jz      3f
        mov     %rax, %r15              # bytes left to write
        lea     buffer(%rip), %rbx
2:      mov     $SYS_write, %eax
        mov     %r13, %rdi
        mov     %rbx, %rsi
        mov     %r15, %rdx
        syscall
        test    %rax, %rax
        js      fail
        add     %rax, %rbx
        sub     %rax, %r15
        jnz     2b
        jmp     1b
3:      ret

# The decimal number at %rdi, in %eax; leaves through usage on anything but digits.
parse:
        xor     %eax, %eax
        cmpb    $0, (%rdi)
        je      usage
1:      movzbl  (%rdi), %ecx
        test    %ecx, %ecx
        jz      2f
        sub     $'0', %ecx
        cmp     $9, %ecx
        ja      usage
        imul    $10, %eax, %eax
        add     %ecx, %eax
        inc     %rdi
        jmp     1b
2:      ret

usage:
        mov     $SYS_write, %eax
        mov     $2, %edi
        lea     usage_text(%rip), %rsi
        mov     $usage_length, %edx
        syscall
        mov     $2, %edi
        mov     $SYS_exit, %eax
        syscall

fail:                                   # %rax holds -errno
        neg     %rax
        mov     %rax, %rdi
        mov     $SYS_exit, %eax
        syscall

        .section .rodata
usage_text:
        .ascii  "usage: vsock-cat CID PORT\n"
        .set    usage_length, . - usage_text

        .data
address:                                # struct sockaddr_vm
        .short  AF_VSOCK                # svm_family
        .short  0                       # svm_reserved1
        .long   0                       # svm_port
        .long   0                       # svm_cid
        .byte   0, 0, 0, 0              # svm_flags, svm_zero

        .bss
buffer:
        .skip   4096
