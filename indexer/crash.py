"""Crash hook for tests: VIDSEARCH_CRASH_AT=<point>:<n> kills the process with SIGKILL the n-th time <point> is hit."""
from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "VIDSEARCH_CRASH_AT"
# Named points: "video-written" (rows of a video flushed, not committed), "commit" (a batch committed, its
# vectors not yet in FAISS), "faiss-replace" (a FAISS temp file written and fsynced, not yet renamed).
POINTS = ("video-written", "commit", "faiss-replace")
_hits: Counter = Counter()


def crash_point(name: str) -> None:
    """Count a pass through `name`; die at once, like a power cut, when VIDSEARCH_CRASH_AT asks for it."""
    want = os.environ.get(ENV)
    if not want:
        return
    point, _, nth = want.partition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
