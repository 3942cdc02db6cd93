#!/usr/bin/env bash
# Build the small Linux guest the end-to-end tests boot, from Debian packages only:
#   scripts/build-guest-image.sh [--ignore-acpi] OUT.qcow2
# Debian's cloud kernel and busybox-static, an initramfs that loads the virtio, button and
# evdev modules, SYSLINUX on a FAT partition, an ext4 root: the bootloader and kernel are
# inside the image, so a snapshot of the disk boots anywhere. No mount, loop or chroot.
#
# The guest prints one line per event on its serial console (ttyS0):
#   shelf-guest: boot N          N counts boots in /var/lib/boot-count on its root fs
#   shelf-guest: bound IP        udhcpc got IP for eth0
#   shelf-guest: shutdown        the ACPI power button was pressed; it powers off cleanly
# With --ignore-acpi the kernel command line carries shelf.acpi=ignore: init then starts
# no acpid, and the guest ignores the power button (the shutdown-timeout path).
#
# SHELF_GUEST_DEBS=DIR keeps the downloaded .debs there (default: a temporary directory).
set -euo pipefail

ACPI=listen
if [ "${1:-}" = "--ignore-acpi" ]; then ACPI=ignore; shift; fi
if [ $# -ne 1 ]; then
  echo "usage: $0 [--ignore-acpi] OUT.qcow2" >&2
  exit 2
fi
OUT=$1
MODULES=(virtio_pci virtio_blk virtio_net button evdev)
SECTOR=512
BOOT_START=2048 BOOT_SECTORS=$((32 * 2048))  # 32 MiB FAT: kernel (14 MB) and initramfs
ROOT_START=$((BOOT_START + BOOT_SECTORS)) ROOT_SECTORS=$((32 * 2048))

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
debs=${SHELF_GUEST_DEBS:-$work/debs}
mkdir -p "$debs"

fetch() {  # fetch PACKAGE: download its .deb into $debs unless there already; print its path
  local found
  found=$(find "$debs" -maxdepth 1 -name "${1}_*.deb" | head -n 1)
  if [ -z "$found" ]; then
    (cd "$debs" && apt-get download -q=2 -o APT::Sandbox::User=root "$1" >/dev/null)
    found=$(find "$debs" -maxdepth 1 -name "${1}_*.deb" | head -n 1)
  fi
  echo "$found"
}

# linux-image-cloud-amd64 only depends on the versioned kernel package.
kernel_package=$(dpkg-deb -f "$(fetch linux-image-cloud-amd64)" Depends | cut -d' ' -f1)
dpkg-deb -x "$(fetch "$kernel_package")" "$work/kernel"
dpkg-deb -x "$(fetch busybox-static)" "$work/busybox"
version=$(basename "$(ls -d "$work"/kernel/lib/modules/*)")
depmod -b "$work/kernel" "$version"  # the .deb ships no modules.dep
busybox=$work/busybox/bin/busybox

install_busybox() {  # install_busybox DIR: busybox and a link per applet in DIR/bin
  mkdir -p "$1/bin"
  cp "$busybox" "$1/bin/busybox"
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$1/bin/$applet"
  done
}

# The initramfs: the modules (dependencies first, in the order modprobe would load them),
# then mount the root partition read-write and hand over to its init.
initramfs=$work/initramfs
install_busybox "$initramfs"
mkdir -p "$initramfs"/{dev,proc,newroot,modules}
: > "$initramfs/modules/order"
for module in "${MODULES[@]}"; do
  modprobe -d "$work/kernel" -S "$version" --show-depends "$module" | while read -r _ path _; do
    name=$(basename "$path")
    if ! grep -qx "$name" "$initramfs/modules/order"; then
      cp "$path" "$initramfs/modules/$name"
      echo "$name" >> "$initramfs/modules/order"
    fi
  done
done
cat > "$initramfs/init" <<'EOF'
#!/bin/sh
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
while read -r module; do insmod "/modules/$module"; done < /modules/order
tries=0
until [ -b /dev/vda2 ] || [ $tries -ge 100 ]; do sleep 0.1; tries=$((tries + 1)); done
mount -t ext4 -o rw /dev/vda2 /newroot || { echo "shelf-guest: no root"; poweroff -f; }
umount /proc
umount /dev
exec switch_root /newroot /sbin/init
EOF
chmod +x "$initramfs/init"
(cd "$initramfs" && find . | cpio -o -H newc --quiet | gzip -9) > "$work/initrd.gz"

# The root filesystem: busybox init runs /etc/rc.boot once; acpid and udhcpc do the rest.
root=$work/root
install_busybox "$root"
mkdir -p "$root"/{dev,proc,sys,tmp,sbin,etc/acpi/PWRF,var/lib}
ln -s ../bin/busybox "$root/sbin/init"
echo "::sysinit:/etc/rc.boot" > "$root/etc/inittab"
cat > "$root/etc/rc.boot" <<'EOF'
#!/bin/sh
say() { echo "shelf-guest: $*" > /dev/console; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
count=$(( $(cat /var/lib/boot-count 2>/dev/null || echo 0) + 1 ))
echo "$count" > /var/lib/boot-count
sync
say "boot $count"
ifconfig lo 127.0.0.1 up
ifconfig eth0 up
if grep -qw shelf.acpi=ignore /proc/cmdline; then
  say "ignoring ACPI"
else
  acpid -c /etc/acpi -l /tmp/acpid.log
fi
udhcpc -i eth0 -s /etc/udhcpc.script -T 1 -t 5 -A 1 -b -q -x hostname:shelf-guest >/dev/null 2>&1
EOF
# udhcpc -q quits once bound: the lease outlives any test, and nothing keeps a file open.
cat > "$root/etc/udhcpc.script" <<'EOF'
#!/bin/sh
case "$1" in
  deconfig) ifconfig "$interface" 0.0.0.0 ;;
  bound|renew)
    ifconfig "$interface" "$ip" netmask "$subnet"
    [ -n "$router" ] && route add default gw "${router%% *}" dev "$interface"
    [ "$1" = bound ] && echo "shelf-guest: bound $ip" > /dev/console ;;
esac
exit 0
EOF
# The power button: say so, make the root filesystem clean, power off at once (busybox
# init's own poweroff would add about 2 s of sleeps).
cat > "$root/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "shelf-guest: shutdown" > /dev/console
sync
mount -o remount,ro /
poweroff -f
EOF
chmod +x "$root/etc/rc.boot" "$root/etc/udhcpc.script" "$root/etc/acpi/PWRF/00000080"

# The disk: an MBR with a bootable FAT partition (SYSLINUX, kernel, initramfs) and ext4.
disk=$work/disk.raw
truncate -s $(((ROOT_START + ROOT_SECTORS) * SECTOR)) "$disk"
sfdisk -q "$disk" <<EOF
label: dos
start=$BOOT_START, size=$BOOT_SECTORS, type=e, bootable
start=$ROOT_START, size=$ROOT_SECTORS, type=83
EOF
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" conv=notrunc bs=440 count=1 status=none
mkfs.fat -F 16 --offset "$BOOT_START" -n BOOT "$disk" $((BOOT_SECTORS / 2)) >/dev/null
syslinux --install --offset $((BOOT_START * SECTOR)) "$disk"
command_line="root=/dev/vda2 console=ttyS0,115200 quiet panic=5"
[ "$ACPI" = ignore ] && command_line="$command_line shelf.acpi=ignore"
cat > "$work/syslinux.cfg" <<EOF
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND $command_line
EOF
cp "$work/kernel/boot/vmlinuz-$version" "$work/vmlinuz"
mcopy -i "$disk@@$((BOOT_START * SECTOR))" "$work/syslinux.cfg" "$work/vmlinuz" \
  "$work/initrd.gz" ::
mke2fs -q -t ext4 -L root -d "$root" -E offset=$((ROOT_START * SECTOR)) "$disk" \
  $((ROOT_SECTORS / 2))k

qemu-img convert -c -O qcow2 "$disk" "$OUT.partial"
mv "$OUT.partial" "$OUT"
