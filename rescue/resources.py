"""Where the shell files live: the source checkout's hooks/ first, else the installed package data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def hooks_dir() -> Path:
    checkout = Path(__file__).resolve().parent.parent / "hooks"
    if (checkout / "lib").is_dir():
        return checkout
    return Path(str(resources.files("rescue._hooks")))
