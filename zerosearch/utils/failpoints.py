"""Failpoints: named places where a process kills itself, for crash tests.

Set `ZS_FAILPOINT=<name>:<step>` (e.g. `after_rollout:3`, `checkpoint_before_rename:2`) and the process
sends itself SIGKILL when it reaches that point at that step: no cleanup, no flush, exactly like a machine
failure. Unset (always, outside tests), a failpoint is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str, step: int) -> None:
    if os.environ.get("ZS_FAILPOINT") == f"{name}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
