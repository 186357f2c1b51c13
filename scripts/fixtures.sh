#!/usr/bin/env bash
# Builds the Linux boot fixtures from Debian packages, cached in fixtures/cache/:
#   vmlinuz    Debian's stock linux-image-amd64 kernel (bzImage)
#   vmlinux    the same kernel's ELF image, extracted from vmlinuz's XZ payload
#   initramfs  a busybox-static initramfs whose init prints a marker and powers off; with
#              kvmkit.test=virtio (or kvmkit.bench=virtio) on the command line it loads
#              Debian's virtio modules and runs the guest side of test/hw/virtio.test.ts (or
#              of kvmkit bench virtio): test/hw/virtio-guest.sh
#   vsock-bench  the vsock benchmark's program (test/hw/vsock-bench.c), static: the guest side
#              in the initramfs, the host side here, one program for kvmkit and QEMU alike
#   debs/      the two Debian packages they come from (scripts/hwvm.sh builds its L1 from them)
# Needs apt-get, dpkg-deb, xz, cpio and binutils; on a fresh machine, run as root so it can install
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/kernel-modules.sh
source scripts/kernel-modules.sh
repo=$(pwd)
out=$repo/fixtures/cache
mkdir -p "$out"
if [ -s "$out/vmlinux" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initramfs" ] &&
  [ "$out/initramfs" -nt "$0" ] && [ "$out/initramfs" -nt test/hw/virtio-guest.sh ] &&
  [ "$out/initramfs" -nt test/hw/vsock-cat.S ] && [ "$out/initramfs" -nt test/hw/vsock-bench.c ] &&
  [ -x "$out/vsock-bench" ] &&
  ls "$out"/debs/linux-image-*.deb >/dev/null 2>&1; then
  echo "fixtures: cached in $out"
  exit 0
fi

need=()
command -v xz >/dev/null || need+=(xz-utils)
command -v cpio >/dev/null || need+=(cpio)
command -v strings >/dev/null && command -v as >/dev/null || need+=(binutils)
command -v gcc >/dev/null || need+=(gcc)
[ -e /usr/include/linux/vm_sockets.h ] || need+=(linux-libc-dev)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out/debs"
if ! ls "$out"/debs/linux-image-*.deb "$out"/debs/busybox-static_*.deb >/dev/null 2>&1; then
  [ -n "$(apt-cache policy linux-image-amd64 | awk '/Candidate/{print $2}')" ] || apt-get update -qq
  image=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  # apt's sandbox user cannot write everywhere root can: download as root, then move.
  (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$image" busybox-static)
  mv "$work"/*.deb "$out/debs/"
fi
cd "$work"
dpkg-deb -x "$out"/debs/linux-image-*.deb kernel
dpkg-deb -x "$out"/debs/busybox-static_*.deb busybox
vmlinuz=$(ls kernel/boot/vmlinuz-*)

# The payload is XZ: decompress from its magic, as the kernel's extract-vmlinux does.
offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -1 | cut -d: -f1)
tail -c +$((offset + 1)) "$vmlinuz" | xz -dc > vmlinux 2>/dev/null || true
head -c 4 vmlinux | grep -q ELF || { echo "fixtures: no ELF in $vmlinuz's payload" >&2; exit 1; }

mkdir -p root/bin root/proc root/sys root/dev root/mnt
cp busybox/bin/busybox root/bin/busybox
# The virtio drivers (all modules in Debian's kernel), and ext4 for the test disk (crc32c
# for its metadata checksums: with no modprobe in the initramfs, nothing loads it on demand).
copy_modules kernel root/modules virtio_mmio virtio_blk virtio-rng virtio_console virtio_net \
  vmw_vsock_virtio_transport crc32c_generic ext4
cp "$repo/test/hw/virtio-guest.sh" root/virtio-guest.sh
# busybox has no AF_VSOCK client: the test's own, a static program with no libc.
as --fatal-warnings --64 -o vsock-cat.o "$repo/test/hw/vsock-cat.S"
ld -static -o root/bin/vsock-cat vsock-cat.o
gcc -O2 -Wall -Wextra -Werror -static -o root/bin/vsock-bench "$repo/test/hw/vsock-bench.c"
cat > root/init <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "KVMKIT-INIT-OK $(/bin/busybox cat /proc/cmdline)"
case " $(/bin/busybox cat /proc/cmdline) " in
*" kvmkit.test=virtio "* | *" kvmkit.bench=virtio "*) /bin/busybox sh /virtio-guest.sh ;;
esac
/bin/busybox poweroff -f
INIT
chmod +x root/init
(cd root && find . | cpio -o -H newc --quiet | gzip -9) > initramfs

cp "$vmlinuz" "$out/vmlinuz"
cp vmlinux "$out/vmlinux"
cp root/bin/vsock-bench "$out/vsock-bench"
cp initramfs "$out/initramfs"
echo "fixtures: $(basename "$vmlinuz") and its vmlinux, and a busybox initramfs, in $out"
