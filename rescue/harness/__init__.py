"""The qemu harness: Debian kernels, qemu argv, the serial console, test images, scenarios, a listener."""
