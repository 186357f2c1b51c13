#!/bin/busybox sh
# The guest side of test/hw/virtio.test.ts and of `kvmkit bench virtio` (src/bench/virtio.ts),
# run by the fixtures' initramfs init (see scripts/fixtures.sh) when the command line has
# kvmkit.test=virtio or kvmkit.bench=virtio. It loads Debian's virtio modules in dependency
# order. The test exercises each virtio device it finds and prints one marker line per step
# for the host test to check:
#   KVMKIT-<STEP> ok ...     the step worked (with what it saw)
#   KVMKIT-<STEP> FAIL ...   it did not (with why)
#   KVMKIT-<STEP> absent     the machine has no such device
# Command-line parameters:
#   kvmkit.ip=ADDR/LEN   configure eth0 with this address
#   kvmkit.ip1=ADDR/LEN  configure eth1 with this address
#   kvmkit.ping=ADDR     ping ADDR from eth0 until it answers (60 tries)
#   kvmkit.vsock=PORT    send a line to the host's vsock PORT and print its answer
#   kvmkit.rebind        then unbind and bind the network and vsock devices (a reset and a
#                        re-activation) and ping and send the vsock line again
#   kvmkit.wait          after the steps, wait for a line on the serial console before the
#                        power-off (the host still talks to hvc0 or pings this guest)
# The benchmark times dd on /dev/vda, all O_DIRECT: kvmkit.bench.mib MiB read then written
# in 1 MiB blocks, then kvmkit.bench.reads 4 KiB reads one at a time; one line per test as
# busybox's time says it (`kvmkit-bench seq-read real<TAB>0m 1.23s`). With kvmkit.bench.vsock=PORT,
# it then serves the host's vsock tests on PORT (test/hw/vsock-bench.c) until the host ends
# them. Last, `kvmkit-bench done`.
/bin/busybox --install -s /bin
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Only the kernel's errors reach the console, which these lines share: an informational message
# (a link coming up, once) could land in the middle of a marker line. The rest stays in dmesg.
echo 4 > /proc/sys/kernel/printk

param() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^kvmkit\.$1=//p" | head -1; }
flag() { tr ' ' '\n' < /proc/cmdline | grep -qx "kvmkit\.$1"; }

loaded=
for m in $(cat /modules/order); do
  why=$(insmod "/modules/$m" 2>&1) || echo "KVMKIT-MODULES FAIL insmod $m: $why"
  loaded="$loaded ${m%.ko}"
done
echo "KVMKIT-MODULES ok$loaded"

if [ "$(param bench)" = virtio ]; then
  mib=$(param bench.mib)
  reads=$(param bench.reads)
  timed() {
    name=$1
    shift
    echo "kvmkit-bench $name $(time "$@" 2>&1 > /dev/null | grep '^real')"
  }
  timed seq-read dd if=/dev/vda of=/dev/null bs=1M count="${mib:-128}" iflag=direct
  timed seq-write dd if=/dev/zero of=/dev/vda bs=1M count="${mib:-128}" oflag=direct
  timed read-4k-qd1 dd if=/dev/vda of=/dev/null bs=4k count="${reads:-4096}" iflag=direct
  vsock=$(param bench.vsock)
  # Only with a vsock device (virtio id 19): without one, nobody would ever end the server.
  if [ -n "$vsock" ] && grep -qx 0x0013 /sys/bus/virtio/devices/*/device 2>/dev/null; then
    vsock-bench serve "$vsock" || echo "kvmkit-bench vsock-failed status $?"
  fi
  echo "kvmkit-bench done"
  exit 0
fi

# Every virtio device the transport found, as device-id=driver.
devices=
for dev in /sys/bus/virtio/devices/*; do
  [ -e "$dev/device" ] && devices="$devices $(cat "$dev/device")=$(basename "$(readlink "$dev/driver")")"
done
echo "KVMKIT-VIRTIO-DEVICES${devices:- none}"

# Block: the disk with an ext4 file system is mounted read-only and its hello.txt read; the
# other disk gets a line written 4 KiB into it, which the host reads after the power-off.
disks=$(cd /sys/block && echo vd*)
if [ "$disks" = "vd*" ]; then
  echo "KVMKIT-DISKS absent"
else
  echo "KVMKIT-DISKS ok $disks"
  data=
  for d in $disks; do
    if [ -z "$data" ] && mount -t ext4 -o ro "/dev/$d" /mnt 2>/dev/null; then
      data=$d
      echo "KVMKIT-DISK-READ ok $d $(cat /mnt/hello.txt)"
      umount /mnt
    fi
  done
  [ -n "$data" ] || echo "KVMKIT-DISK-READ FAIL no disk of $disks mounts as ext4"
  for d in $disks; do
    [ "$d" = "$data" ] && continue
    if echo "written by the guest to $d" | dd of="/dev/$d" bs=4096 seek=1 conv=sync,fsync 2>/dev/null; then
      echo "KVMKIT-DISK-WRITE ok $d"
    else
      echo "KVMKIT-DISK-WRITE FAIL dd to /dev/$d"
    fi
    break
  done
fi

# Entropy: the kernel's hwrng picks virtio-rng; /dev/hwrng reads from it.
if [ -c /dev/hwrng ] && [ -n "$(cat /sys/class/misc/hw_random/rng_available 2>/dev/null)" ]; then
  random=$(head -c 32 /dev/hwrng | od -An -tx1 | tr -d ' \n')
  echo "KVMKIT-HWRNG ok $(cat /sys/class/misc/hw_random/rng_current) $random"
else
  echo "KVMKIT-HWRNG absent"
fi

# Console: a shell on hvc0, which the host drives while the guest waits.
if [ -c /dev/hvc0 ]; then
  stty -F /dev/hvc0 -echo 2>/dev/null
  setsid sh -c 'exec sh < /dev/hvc0 > /dev/hvc0 2>&1' &
  echo "KVMKIT-HVC0 ok a shell reads /dev/hvc0"
else
  echo "KVMKIT-HVC0 absent"
fi

# Network: eth0 gets kvmkit.ip (and eth1 kvmkit.ip1), then pings kvmkit.ping until it answers.
eth1() { [ -n "$(param ip1)" ] && ip addr add "$(param ip1)" dev eth1 && ip link set eth1 up; }
if [ -e /sys/class/net/eth0 ]; then
  ip link set lo up
  ip=$(param ip)
  [ -n "$ip" ] && ip addr add "$ip" dev eth0
  ip link set eth0 up
  eth1
  echo "KVMKIT-NET ok eth0 $(cat /sys/class/net/eth0/address) ${ip:-no address}"
  peer=$(param ping)
  if [ -n "$peer" ]; then
    tries=0
    until ping -c 1 -W 1 "$peer" > /dev/null 2>&1; do
      tries=$((tries + 1))
      [ $tries -ge 60 ] && break
    done
    if [ $tries -lt 60 ]; then
      echo "KVMKIT-PING ok $peer after $tries lost"
    else
      echo "KVMKIT-PING FAIL $peer did not answer 60 pings"
    fi
  fi
else
  echo "KVMKIT-NET absent"
fi

# vsock: the transport binds the device (virtio id 19); with kvmkit.vsock=PORT, a line goes
# to the host's PORT (CID 2) through vsock-cat and the answer comes back.
vsock=$(grep -lx 0x0013 /sys/bus/virtio/devices/*/device 2>/dev/null | head -1)
port=$(param vsock)
if [ -z "$vsock" ]; then
  echo "KVMKIT-VSOCK absent"
elif [ ! -e "${vsock%/device}/driver" ]; then
  echo "KVMKIT-VSOCK FAIL no driver bound to ${vsock%/device}"
elif [ -z "$port" ]; then
  echo "KVMKIT-VSOCK ok $(basename "$(readlink "${vsock%/device}/driver")")"
elif answer=$(echo "hello from the guest" | vsock-cat 2 "$port"); then
  echo "KVMKIT-VSOCK ok $port answered: $answer"
else
  echo "KVMKIT-VSOCK FAIL vsock-cat 2 $port: errno $?"
fi

# Reset and re-activation (kvmkit.rebind): each network and vsock device is unbound from its
# driver (which resets it) and bound again; then eth0 pings kvmkit.ping and a line goes to the
# host's vsock PORT once more.
if flag rebind; then
  rebound=
  for dev in /sys/bus/virtio/devices/*; do
    case $(cat "$dev/device") in 0x0001 | 0x0013) ;; *) continue ;; esac
    driver=$(readlink -f "$dev/driver")
    echo "${dev##*/}" > "$driver/unbind" && echo "${dev##*/}" > "$driver/bind" && rebound="$rebound ${dev##*/}"
  done
  ip addr add "$(param ip)" dev eth0
  ip link set eth0 up
  eth1
  tries=0
  until ping -c 1 -W 1 "$(param ping)" > /dev/null 2>&1 || [ $tries -ge 30 ]; do tries=$((tries + 1)); done
  answer=$(echo "hello again" | vsock-cat 2 "$port")
  echo "KVMKIT-REBIND ok$rebound: ping after $tries lost, vsock answered: $answer"
fi

echo "KVMKIT-VIRTIO-DONE"
if flag wait; then
  read -r _
fi
sync
