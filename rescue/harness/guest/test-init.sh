#!/bin/sh
# /init of the test initramfs (built by rescue/testinitrd.py): what a minimal initramfs does, then the
# scenario the kernel command line asks for. Every line meant for the harness starts with "rescue-test: ".
#
#   rescue.test=root   (default) find root=, load rootfstype=, mount it and switch_root; on failure run the
#                      collector (/lib/rescue/collect.sh) the way a generator's panic hook would, then reboot
#   rescue.test=shell  a busybox shell on the console, like initramfs-tools' "(initramfs)" prompt
#   rescue.test=send   send /replay/stream.bin to rescue.host:rescue.port with busybox nc, then reboot
#   rescue.rootwait=S  how long to wait for the root device (default 3)
#   rescue.always=1    run the collector before mounting the root, on a good boot too
#
# The machine never stays up: the end is `reboot -f`, which qemu -no-reboot turns into qemu exiting.

/bin/busybox --install -s /bin
PATH=/bin:/sbin
export PATH

mkdir -p /proc /sys /dev /run /tmp /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() {
    # Into the kernel log, so that dmesg (and what the collector sends) shows what init did; the kernel
    # prints it on the console too.
    echo "<4>rescue-test: $*" >/dev/kmsg 2>/dev/null || echo "rescue-test: $*"
}

finish() {
    say "end: $*"
    sync
    reboot -f
}

TEST=root
ROOT=""
ROOTFSTYPE=""
ROOTFLAGS=""
ROOTWAIT=3
ALWAYS=""
HOST=10.0.2.2
PORT=3333
read -r cmdline </proc/cmdline
for arg in $cmdline; do
    case "$arg" in
        rescue.test=*) TEST=${arg#rescue.test=} ;;
        rescue.rootwait=*) ROOTWAIT=${arg#rescue.rootwait=} ;;
        rescue.host=*) HOST=${arg#rescue.host=} ;;
        rescue.port=*) PORT=${arg#rescue.port=} ;;
        rescue.always=1) ALWAYS=1 ;;
        root=*) ROOT=${arg#root=} ;;
        rootfstype=*) ROOTFSTYPE=${arg#rootfstype=} ;;
        rootflags=*) ROOTFLAGS=${arg#rootflags=} ;;
    esac
done

# No udev here: load the virtio bus before the devices on it, and the IDE controller of qemu's `pc`.
for mod in virtio_pci virtio_blk virtio_net ata_piix; do
    modprobe "$mod" 2>/dev/null || true
done

# What initramfs-tools' init-premount script does: netconsole from here on when rescue.netconsole=1 asks.
[ -f /lib/rescue/netconsole.sh ] && /bin/sh /lib/rescue/netconsole.sh

# Bring eth0 up and configure it with klibc ipconfig (DHCP from qemu's user network).
network_up() {
    ip link set eth0 up || return 1
    # ipconfig's first DHCP send fails on a link that is still down and then backs off 10 s: wait for "up".
    n=0
    while [ "$(cat /sys/class/net/eth0/operstate 2>/dev/null)" != up ] && [ "$n" -lt 50 ]; do
        sleep 0.1
        n=$((n + 1))
    done
    ipconfig -t 10 eth0 >/dev/null
}

wait_for_root() {
    case "$ROOT" in
        "") return 1 ;;
        UUID=* | LABEL=*) dev=$(findfs "$ROOT" 2>/dev/null) ;;
        *) dev=$ROOT ;;
    esac
    n=0
    limit=$((ROOTWAIT * 10))
    while [ ! -b "$dev" ] && [ "$n" -lt "$limit" ]; do
        sleep 0.1
        n=$((n + 1))
        case "$ROOT" in UUID=* | LABEL=*) dev=$(findfs "$ROOT" 2>/dev/null) ;; esac
    done
    [ -b "$dev" ] && ROOTDEV=$dev
}

collect() {
    REASON=$1
    export ROOT ROOTFSTYPE ROOTFLAGS REASON
    if [ -f /lib/rescue/collect.sh ]; then
        /bin/sh /lib/rescue/collect.sh
        say "collector exit $?"
    else
        say "no collector in this image"
    fi
}

case "$TEST" in
    shell)
        say "shell"
        PS1='(initramfs) ' setsid cttyhack sh
        finish "shell exited"
        ;;
    send)
        if network_up; then
            say "network up"
        else
            say "network failed"
        fi
        nc "$HOST" "$PORT" </replay/stream.bin
        say "nc exit $?"
        finish "sent"
        ;;
esac

say "waiting for root $ROOT"
if ! wait_for_root; then
    say "ALERT! $ROOT does not exist"
    # This init logs its failure in the kernel log, in initramfs-tools' words; initramfs-tools itself prints
    # it on the console only, so its bundles lack the line (the mkinitramfs scenario covers that case).
    echo "<3>ALERT!  ${ROOT:-root=} does not exist.  Dropping to a shell!" >/dev/kmsg
    collect "ALERT! ${ROOT:-root=} does not exist"
    finish "no root device"
fi
[ -n "$ROOTFSTYPE" ] && modprobe "$ROOTFSTYPE"
# rescue.always=1: send on every boot before the mount, as the hooks' local-premount script does.
[ -n "$ALWAYS" ] && collect "rescue.always=1"
if mount -t "${ROOTFSTYPE:-auto}" -o "ro${ROOTFLAGS:+,$ROOTFLAGS}" "$ROOTDEV" /newroot; then
    say "root mounted"
    mount --move /dev /newroot/dev 2>/dev/null || umount /dev
    umount /sys /proc
    exec switch_root /newroot /sbin/init
fi
echo "<3>Failed to mount $ROOTDEV as root file system." >/dev/kmsg
say "mount of $ROOTDEV failed"
collect "mount of $ROOTDEV (${ROOTFSTYPE:-auto}) failed"
finish "root not mounted"
