#!/usr/bin/env bash
# Install and start what shelf's demo and tests need on Debian 12, as root. Idempotent:
# only missing packages are installed, only stopped services are started.
set -euo pipefail

PACKAGES=(python3-venv python3-dev gcc pkg-config libvirt-dev libvirt-daemon
  libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils dnsmasq-base
  iptables postgresql
  # scripts/build-guest-image.sh: the test guest's disk, partitions, bootloader, initramfs
  fdisk dosfstools mtools syslinux syslinux-common e2fsprogs kmod cpio
  # bench/loopfs.py: the storage tests' loop filesystems (XFS with reflink, ext4)
  xfsprogs util-linux mount)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
    || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
