"""The calling thread's CPU scheduling, kept as it was around code that changes it.

SVT-AV1 (the AV1 encoder PyAV bundles), run as root, raises the thread that opens an encoder to SCHED_FIFO at
priority 99, and leaves it there. Every process that thread starts afterwards inherits the real-time policy:
decode workers, servers, databases. A real-time process that spins (a thread pool waiting for work) then starves
everything else on its core, so timeouts fire and runs crawl on a small machine.
"""
from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def keep_scheduling():
    """Restore the calling thread's scheduling policy and priority on the way out, if the body changed them."""
    if not hasattr(os, "sched_getscheduler"):   # not Linux: nothing to keep
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
            try:
                os.sched_setscheduler(0, policy, param)
            except OSError:                      # not permitted: the policy stays as the body left it
                pass
