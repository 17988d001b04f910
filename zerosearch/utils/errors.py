"""The base of failures whose message is complete for a user: the entry points print it as one `error:` line
(exit status 1) instead of a traceback. Raise a subclass where the message already names what failed
(the file, the rank and node, the config key) and what to do about it."""

from __future__ import annotations


class RunError(RuntimeError):
    """A run cannot go on; the message says what failed, where, and how to continue."""
