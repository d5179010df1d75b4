"""The calling thread's CPU scheduling, kept as it was around code that changes it.

SVT-AV1 (the AV1 encoder PyAV bundles), run as root, raises the thread that opens an encoder to SCHED_FIFO at
priority 99, and leaves it there. Every process that thread starts afterwards inherits the real-time policy:
decode workers, servers, databases. A real-time process that spins (a thread pool waiting for work) then starves
everything else on its core, so timeouts fire and runs crawl on a small machine.
"""
from __future__ import annotations

import os
from contextlib import contextmanager


def current():
    """(policy, param) of the calling thread's scheduling; None where the platform has no such call."""
    return (os.sched_getscheduler(0), os.sched_getparam(0)) if hasattr(os, "sched_getscheduler") else None


def restore(state) -> bool:
    """Put the calling thread back to `state` (from `current`) if it differs; whether it differed."""
    if state is None or current() == state:
        return False
    try:
        os.sched_setscheduler(0, *state)
    except OSError:                              # not permitted: the policy stays as it is
        pass
    return True


@contextmanager
def keep_scheduling():
    """Restore the calling thread's scheduling policy and priority on the way out, if the body changed them."""
    state = current()
    try:
        yield
    finally:
        restore(state)
