"""rescue: get the evidence out of a machine stuck in its initramfs, and say what went wrong."""

__version__ = "0.1.0"
