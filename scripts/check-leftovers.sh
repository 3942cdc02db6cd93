#!/usr/bin/env bash
# What the tests may leave behind: shelf domains, pools and networks on qemu:///system,
# DHCP entries in shelf-net, files in the default data directory (/var/lib/shelf as root)
# the tests' own directories under /var/tmp (libvirtd reaches test files there), and the
# mounts and loop devices of the storage tests' filesystems there (bench/loopfs.py).
#
#   scripts/check-leftovers.sh list            print them, one a line
#   scripts/check-leftovers.sh save FILE       remember what is there now (before the tests)
#   scripts/check-leftovers.sh check [FILE]    list what is there and was not in FILE;
#                                              exit 1 if anything is
#
# shelf-net itself is shared infrastructure (defined once, kept) and not listed; its
# DHCP entries are.
set -euo pipefail

URI=qemu:///system
DATA_DIR=${SHELF_DEFAULT_DATA_DIR:-/var/lib/shelf}

virsh_names() {  # virsh_names list|pool-list|net-list: the shelf ones
    virsh -q -c "$URI" "$1" --all --name 2>/dev/null | sed 's/ *$//' | grep '^shelf-' || true
}

list() {
    if command -v virsh > /dev/null && virsh -q -c "$URI" version > /dev/null 2>&1; then
        virsh_names list | sed 's/^/domain /'
        virsh_names pool-list | sed 's/^/pool /'
        virsh_names net-list | grep -vx 'shelf-net' | sed 's/^/network /' || true
        virsh -q -c "$URI" net-dumpxml shelf-net 2>/dev/null \
            | grep -o "<host mac='[^']*'[^/]*" | sed "s/^<host /dhcp-entry /" || true
    fi
    if [ -d "$DATA_DIR" ]; then
        find "$DATA_DIR" -mindepth 1 \( -type f -o -type d -empty \) | sed 's/^/file /'
    fi
    find /var/tmp -maxdepth 1 -name 'shelf-*' 2>/dev/null | sed 's/^/file /'
    findmnt -rn -o TARGET 2>/dev/null | grep '^/var/tmp/shelf-' | sed 's/^/mount /' || true
    losetup --noheadings --output NAME,BACK-FILE 2>/dev/null \
        | awk '$2 ~ /^\/var\/tmp\/shelf-/ { print "loop-device " $1 " " $2 }' || true
}

case "${1:-}" in
    list) list | sort ;;
    save) list | sort > "$2" ;;
    check)
        before=${2:-/dev/null}
        left=$(list | sort | comm -23 - <(sort "$before"))
        if [ -n "$left" ]; then
            echo "the tests left these behind:" >&2
            echo "$left" >&2
            exit 1
        fi
        echo "the tests left nothing behind"
        ;;
    *) echo "usage: $0 list | save FILE | check [FILE]" >&2; exit 2 ;;
esac
