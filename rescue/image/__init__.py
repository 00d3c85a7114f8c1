"""Initramfs images read in Python: compression, newc cpio, the image, kernel module ELF, check-image."""
