"""`utils.malloc.keep_freed_memory`: after it, a step's tensors freed and allocated again reuse mapped memory
(no page faults); with a low mmap threshold (what glibc's adaptive default amounts to for many of a training
step's blocks, docs/PERFORMANCE.md) they are unmapped on free and faulted back in page by page. Each case
runs in a fresh process: the thresholds are per process."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from zerosearch.utils.malloc import keep_freed_memory

# a training step's pattern: many activations of a few MiB live at once, all freed at the end of the step.
# Six steps of 24 tensors of 4 MiB; print the minor page faults of the last three steps
_PROBE = """
import resource, sys, torch
from zerosearch.utils.malloc import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory() is None
else:  # blocks of 1 MiB and more mapped on their own, unmapped on free: what glibc's defaults do to a step
    assert keep_freed_memory(mmap_threshold=1 << 20) is None
faults = []
for _ in range(6):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    live = [torch.ones(1 << 20) for _ in range(24)]  # float32: 4 MiB each, every page written
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    del live
print(sum(faults[-3:]))
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_memory_is_reused_without_page_faults():
    mapped, tuned = _faults("mapped"), _faults("tuned")
    pages = 3 * 24 * (4 << 20) // 4096  # the last three steps' pages
    assert mapped > pages // 2  # every block a fresh mapping, faulted in page by page every step
    assert tuned < pages // 20  # kept: the same memory again


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="positive"):
        keep_freed_memory(mmap_threshold=0)
