#!/usr/bin/env bash
# The hardware-virtualization test machine: runs a command where /dev/kvm is hardware KVM
# (VT-x or AMD-V), and exits with its status.
#
#   scripts/hwvm.sh [--] COMMAND [ARG...]
#
# Where this host's CPU has vmx or svm, COMMAND runs here. Elsewhere (a software-assisted
# KVM such as kvm_pvm), it runs in an L1 machine: Debian's stock kernel under QEMU TCG with
# `-cpu max`, which emulates AMD-V with nested paging on Intel and AMD hosts alike, so the
# L1's kvm_amd gives it a hardware-virtualization /dev/kvm. The L1 sees this host's root
# read-only over 9p, chroots into it (Node, the toolchain and the checkout are all there),
# with tmpfs where tests write: /tmp, /dev/shm, $KVMKIT_CACHE_DIR and node_modules/.vite*.
# COMMAND runs in the current directory with PATH, CI and KVMKIT_* passed on; its output
# comes back on the L1's serial console and its status through a second, writable 9p share.
#
# The L1 runs with tsc=reliable (it matters with HWVM_SMP above 1): TCG gives every vCPU the
# same clock, but the L1 kernel's TSC-warp check, timed across TCG's round-robin vCPUs, marks
# it unstable otherwise, and its KVM then moves each L2 vCPU's TSC on its own.
#
# An outer-QEMU crash (TCG's assertions under load) is reported as such and retried once;
# it never reads as COMMAND's failure. Exit status: COMMAND's; 125 if the test machine
# could not run it (no hardware KVM in the L1, L1 boot failure, QEMU crashed twice).
#
# Pieces (Debian's kernel and modules, busybox: see scripts/fixtures.sh) are cached in
# fixtures/cache/hwvm. Settings: HWVM_TIMEOUT (seconds, default 3600), HWVM_ACCEL (default
# tcg,thread=single: thread=multi aborted under load), HWVM_MEMORY (default 4G), HWVM_SMP
# (default 1: thread=single runs every L1 vCPU on one host thread anyway, and with 2, guests
# of 2 and 4 vCPUs stalled for minutes under kvmkit and QEMU alike, where with 1 they boot
# to init in 18 and 23 s), HWVM_FORCE=1 (use the L1 even on a host with vmx/svm), HWVM_OUTPUT_DIR (a
# host directory the L1 may write, at the same path: for reports such as vitest's JSON).
set -euo pipefail
[ "${1:-}" = "--" ] && shift
(($#)) || { echo "usage: scripts/hwvm.sh [--] COMMAND [ARG...]" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)

if [ "${HWVM_FORCE:-}" != 1 ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
  exec "$@"
fi

cache=$root/fixtures/cache/hwvm
# shellcheck source=scripts/kernel-modules.sh
source "$root/scripts/kernel-modules.sh"
# Modules the L1 needs; their dependencies are added from each .ko's depends= string.
# vhost_net/tun and vhost_vsock give tests and benchmarks /dev/vhost-net, /dev/net/tun and
# /dev/vhost-vsock (kvmkit's vhost backends, QEMU's vhost-vsock-device).
wanted=(kvm-amd kvm-intel 9p 9pnet_virtio virtio_pci tun vhost_net vhost_vsock)

build_l1() {
  bash "$root/scripts/fixtures.sh" >&2
  local work
  work=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  dpkg-deb -x "$root"/fixtures/cache/debs/linux-image-*.deb "$work/kernel"
  dpkg-deb -x "$root"/fixtures/cache/debs/busybox-static_*.deb "$work/busybox"
  local tree=$work/root
  mkdir -p "$tree"/{bin,proc,sys,dev,host,out,modules}
  cp "$work/busybox/bin/busybox" "$tree/bin/busybox"
  copy_modules "$work/kernel" "$tree/modules" "${wanted[@]}"
  cat > "$tree/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
stty -F /dev/ttyS0 -onlcr raw -echo 2>/dev/null
fail() { echo "hwvm: $*" > /dev/ttyS0; poweroff -f; }
for m in $(cat /modules/order); do
  # TCG runs every L1 vCPU in one thread: KVM's halt polling there would spin that thread
  # while an L2 vCPU idles, starving the L2 vCPU that has work.
  params=; [ "$m" = kvm.ko ] && params=halt_poll_ns=0
  # kvm-intel fails on the AMD-V that TCG emulates: expected, harmless.
  insmod "/modules/$m" $params 2>/dev/null || case $m in kvm-intel.ko) ;; *) fail "insmod $m failed" ;; esac
done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro host /host || fail "cannot mount the host's root"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out /out || fail "cannot mount the result share"
grep -qwE 'svm|vmx' /proc/cpuinfo || fail "the L1 CPU has no svm/vmx flag"
[ -c /dev/kvm ] || fail "no /dev/kvm in the L1 (kvm_amd did not load)"
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs shm /host/dev/shm
# A checkout under /tmp (CI's clones may be) stays visible through the tmpfs over /tmp.
checkout=$(cat /out/checkout)
case $checkout in /tmp/*) mkdir -p /keep && mount --bind "/host$checkout" /keep ;; esac
mount -t tmpfs tmp /host/tmp
case $checkout in /tmp/*) mkdir -p "/host$checkout" && mount --bind /keep "/host$checkout" ;; esac
while read -r dir; do
  mkdir -p "/host$dir" 2>/dev/null
  [ -n "$dir" ] && mount -t tmpfs scratch "/host$dir"
done < /out/writable
mkdir -p /host/tmp/hwvm-out
mount --bind /out /host/tmp/hwvm-out
if [ -s /out/output-dir ]; then
  mkdir -p "/host$(cat /out/output-dir)" 2>/dev/null
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 output "/host$(cat /out/output-dir)" || fail "cannot mount HWVM_OUTPUT_DIR"
fi
echo "hwvm: L1 up after $(cut -d' ' -f1 /proc/uptime) s; $(grep -cw svm /proc/cpuinfo) CPU(s) with svm; /dev/kvm is kvm_amd" > /dev/ttyS0
chroot /host /bin/bash /tmp/hwvm-out/command.sh < /dev/null > /dev/ttyS0 2>&1
echo $? > /out/status
sync
poweroff -f
INIT
  chmod +x "$tree/init"
  mkdir -p "$cache"
  (cd "$tree" && find . | cpio -o -H newc --quiet | gzip -6) > "$cache/initramfs.tmp"
  cp "$work"/kernel/boot/vmlinuz-* "$cache/vmlinuz"
  mv "$cache/initramfs.tmp" "$cache/initramfs"
  echo "hwvm: L1 built in $cache (modules: $(tr '\n' ' ' < "$tree/modules/order"))" >&2
}

[ -s "$cache/vmlinuz" ] && [ -s "$cache/initramfs" ] && [ "$cache/initramfs" -nt "$0" ] &&
  [ "$cache/initramfs" -nt "$root/scripts/kernel-modules.sh" ] || build_l1

command -v qemu-system-x86_64 >/dev/null || { echo "hwvm: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)" >&2; exit 125; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Where tests write inside the read-only root: tmpfs over each (created here if missing).
writable=("${KVMKIT_CACHE_DIR:-$HOME/.cache/kvmkit}" "$PWD/node_modules/.vite" "$PWD/node_modules/.vite-temp")
for dir in "${writable[@]}"; do mkdir -p "$dir"; done
printf '%s\n' "${writable[@]}" > "$out/writable"
echo "$root" > "$out/checkout"
shares=()
if [ -n "${HWVM_OUTPUT_DIR:-}" ]; then
  mkdir -p "$HWVM_OUTPUT_DIR"
  output_dir=$(cd "$HWVM_OUTPUT_DIR" && pwd)
  echo "$output_dir" > "$out/output-dir"
  shares=(-virtfs "local,path=$output_dir,mount_tag=output,security_model=none,multidevs=remap")
fi
{
  echo "set -e"
  # Tests may tell the test machine from hardware: see test/hw/debian.test.ts.
  echo "export HOME=/tmp/home PATH=$(printf %q "$PATH") TERM=dumb KVMKIT_TEST_MACHINE=nested-tcg"
  env | sed -n 's/^\(CI\|KVMKIT_[A-Z_]*\)=.*/\1/p' | while read -r name; do
    echo "export $name=$(printf %q "${!name}")"
  done
  echo "mkdir -p \$HOME"
  echo "cd $(printf %q "$PWD")"
  printf 'exec'
  printf ' %q' "$@"
  echo
} > "$out/command.sh"

boot() {
  rm -f "$out/status"
  set +e
  timeout --foreground "${HWVM_TIMEOUT:-3600}" qemu-system-x86_64 \
    -accel "${HWVM_ACCEL:-tcg,thread=single}" -cpu max -m "${HWVM_MEMORY:-4G}" -smp "${HWVM_SMP:-1}" \
    -kernel "$cache/vmlinuz" -initrd "$cache/initramfs" \
    -append "console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init tsc=reliable" \
    -virtfs "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$out,mount_tag=out,security_model=none,multidevs=remap" "${shares[@]}" \
    -display none -monitor none -serial stdio -no-reboot 2> "$out/qemu.err"
  qemu_status=$?
  set -e
}

for attempt in 1 2; do
  boot
  if [ -s "$out/status" ]; then
    exit "$(cat "$out/status")"
  fi
  if ((qemu_status == 124)); then
    echo "hwvm: the test machine ran past HWVM_TIMEOUT=${HWVM_TIMEOUT:-3600} s" >&2
    exit 125
  fi
  if ((qemu_status == 0)); then
    echo "hwvm: the L1 stopped before the command finished (see its messages above)" >&2
    exit 125
  fi
  echo "hwvm: the outer QEMU crashed (status $qemu_status), not the command: $(tail -3 "$out/qemu.err")" >&2
  ((attempt == 1)) && echo "hwvm: retrying once" >&2
done
exit 125
