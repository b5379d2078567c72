"""Swap two names back and forth, atomically, until time is up (run as a process).

`python -m tests.hostile.swapper A B SECONDS` exchanges `A` and `B` with
`renameat2(RENAME_EXCHANGE)` in a tight loop: at every instant one of them is a real
folder and the other a symlink, and which is which keeps changing. It prints how many
swaps it made. A process of its own, so the loop never waits for the test's GIL.
Linux only (glibc's `renameat2`).
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

AT_FDCWD = -100
RENAME_EXCHANGE = 2


def swap_until(a: str, b: str, seconds: float) -> int:
    """Exchange `a` and `b` until `seconds` have passed; return the number of swaps."""
    libc = ctypes.CDLL(None, use_errno=True)
    first, second = os.fsencode(a), os.fsencode(b)
    end = time.monotonic() + seconds
    swaps = 0
    while time.monotonic() < end:
        for _ in range(100):
            if libc.renameat2(AT_FDCWD, first, AT_FDCWD, second, RENAME_EXCHANGE) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), a)
            swaps += 1
    return swaps


if __name__ == "__main__":
    print(swap_until(sys.argv[1], sys.argv[2], float(sys.argv[3])), flush=True)
