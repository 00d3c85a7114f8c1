"""boot-failed-unexplained: the log shows a failed boot (a shell, a panic) and no rule explains it.

Nobody should be told "no known boot failure found" about a boot that plainly failed. The finding's
evidence is the failure line and the few lines before it most likely to matter: the last ones that look
like errors, kernel or generator, closest to the failure first.
"""

from __future__ import annotations

import re

from rescue.diagnose.findings import Evidence, Finding
from rescue.diagnose.inputs import Inputs, normalize
from rescue.diagnose.rules.base import Context, with_rebuild

ID = "boot-failed-unexplained"
LOOK_BACK = 400  # lines before the failure searched for what went wrong
MAX_LINES = 5
# What an error line says, in the kernel's and the generators' words (case matters little here).
_ERRORISH = re.compile(
    r"\b(?:error|fail(?:ed|ure)?|unable|cannot|can't|not found|no such|does not exist|timed out|"
    r"timeout|invalid|refused|denied|corrupt|bad|missing)\b",
    re.IGNORECASE,
)
_CALM = re.compile(r"\b(?:no error|0 errors|without error)\b", re.IGNORECASE)


def unexplained(inputs: Inputs, failure: Evidence, ctx: Context) -> Finding:
    lines = inputs.logs.get(failure.file, "").split("\n")
    start = max(0, failure.line - 1 - LOOK_BACK)
    picked: list[Evidence] = []
    for number in range(failure.line - 1, start, -1):  # the failure line is number failure.line
        text = normalize(lines[number - 1])
        if _ERRORISH.search(text) and not _CALM.search(text):
            picked.append(Evidence(failure.file, number, text[:300]))
            if len(picked) == MAX_LINES:
                break
    note = (
        "# the log shows the failure but not its cause. Capture the evidence from the failing boot:\n"
        "# rescue hooks install --host HOST --update (the initramfs then sends dmesg and a module check),\n"
        "# or check the image before the next boot: rescue check-image /boot/initrd.img-KVER"
    )
    return Finding(
        id=ID,
        severity="error",
        title="the boot failed, for no cause rescue knows: the lines before the failure follow",
        evidence=[failure, *reversed(picked)],
        fix=with_rebuild(note, ctx),
    )
