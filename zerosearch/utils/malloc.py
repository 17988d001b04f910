"""glibc malloc settings for CPU training processes: keep freed tensor memory for the next step.

By default glibc serves a large block (above a threshold that starts at 128 KiB and adapts) with its own
`mmap`, and unmaps it on free; it also gives the top of the heap back to the OS once more than a threshold
is free there. A training step on CPU allocates and frees activations, gradients and logits of 1-30 MB
every step, so each step maps fresh pages again and the kernel zero-fills them one page fault at a time:
at 25 M parameters in bf16 (benchmarks/compare_trl.py), 10-60 thousand minor faults an update after the
first two steps, and updates up to twice as slow on the steps that take them (docs/PERFORMANCE.md).

`keep_freed_memory` fixes both thresholds with `mallopt`, in the running process: blocks below
`mmap_threshold` come from the heap, and freed heap memory stays mapped until more than `trim_threshold`
is free at its top. From the third step on, most updates then take no page faults at all (a few thousand
when a longer batch grows the heap past its earlier peak). The cost is
resident memory held at the step's peak between steps, which a training worker reaches every step anyway.
Blocks of `mmap_threshold` and more (a gathered state dict, a checkpoint shard) are still mapped and
unmapped on their own.
"""

from __future__ import annotations

import ctypes
import platform

# mallopt parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its adaptive threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> str | None:
    """Set glibc's mmap and trim thresholds for this process. Returns None when both were set, otherwise why
    nothing was (not glibc: macOS, musl; or mallopt refused a value), so the caller can say so."""
    if mmap_threshold <= 0 or trim_threshold <= 0:
        raise ValueError(f"malloc thresholds must be positive, got mmap {mmap_threshold}, trim {trim_threshold}")
    libc_name = platform.libc_ver()[0]
    if libc_name != "glibc":
        return "the C library is not glibc" + (f" ({libc_name})" if libc_name else "")
    libc = ctypes.CDLL(None)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return "the C library has no mallopt"
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt takes an int: cap at 2 GiB - 1 (a trim threshold that large never trims a training heap anyway)
    for param, value, name in ((M_MMAP_THRESHOLD, mmap_threshold, "M_MMAP_THRESHOLD"),
                               (M_TRIM_THRESHOLD, min(trim_threshold, 2 ** 31 - 1), "M_TRIM_THRESHOLD")):
        if mallopt(param, value) != 1:
            return f"mallopt({name}, {value}) failed"
    return None
