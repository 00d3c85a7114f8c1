"""Devices the image cannot drive, from the collector's devices.txt: a disk controller or a NIC that no
driver has bound, and whose module (named from the kernel's own aliases) is not in the initramfs.

devices.txt (hooks/collector/evidence.sh) has one line per PCI or virtio device without a driver:
`<sysfs path> class=<hex class|-> modalias=<modalias> module=<module|-> in_image=<yes|no|->`. Only disks
and network devices count (PCI classes 01 and 02, virtio net, block and scsi): an unbound sound card or
balloon says nothing about a failed boot. When the root's device is missing too, and the device is a
controller that can carry it (rules/storage.py), storage-driver-missing is derived from this finding, names
the module and replaces it; another controller's finding stays a warning of its own.
"""

from __future__ import annotations

from rescue.diagnose.rules.base import Cause, Context, Rule, add_modules, modcheck

# PCI class 0x01xxxx mass storage, 0x02xxxx network; virtio device ids 1 net, 2 block, 8 scsi.
_DEVICE = r"^(?P<device>/\S+) (?:class=0x0[12]\S* modalias=\S+|class=- modalias=virtio:d0000000[128]v\S*)"


def _fix(params: dict[str, list[str]], ctx: Context) -> dict[str, str]:
    return add_modules(params["module"], ctx)


DEVICE_DRIVER_MISSING = Rule(
    id="device-driver-missing",
    severity="warning",
    title="no driver for a disk or network device: {module} is not in the initramfs",
    matches=(modcheck("in_image=no", _DEVICE + r" module=(?P<module>[A-Za-z0-9_]+) in_image=no$"),),
    fix=_fix,
    group_by=("module",),
    # The root's disk among them: storage-driver-missing, derived from this, is the root cause and says it
    # with the same line and fix (a warning above the error it explains would bury the headline). A
    # controller it does not name (qemu's IDE beside a missing virtio root) is still reported.
    yields_to=(Cause("storage-driver-missing", (("module", "module"),)),),
)
