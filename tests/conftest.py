"""Shared pytest fixtures, gathered from one module per pipeline stage."""
pytest_plugins = [
    "tests.fixtures.synth",
    "tests.fixtures.model",
    "tests.fixtures.store",
    "tests.fixtures.postgres",
    "tests.fixtures.ray_cluster",
]

import atexit as _atexit
import os as _os
import shutil as _shutil
import tempfile as _tempfile

import pytest as _pytest

# Exported ONNX encoders (and default-placed feature caches) go to a cache of this test session, never the
# user's; subprocesses inherit it. Each pytest process (and each xdist worker) removes its own when it exits:
# a run leaves hundreds of megabytes there, and runs would otherwise fill the disk.
_CACHE = _tempfile.mkdtemp(prefix="vidsearch-test-cache-")
_os.environ["VIDSEARCH_CACHE"] = _CACHE
_atexit.register(_shutil.rmtree, _CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Files that hold slow tests run first, each file's tests in their own order.

    `make test` spreads whole files over two workers (pytest-xdist, `--dist loadfile`) in collection order; a
    long file started last would leave one worker idle while the other finishes it."""
    slow = {item.path for item in items if item.get_closest_marker("slow") is not None}
    rank = {path: i for i, path in enumerate(dict.fromkeys(item.path for item in items))}
    items.sort(key=lambda item: (item.path not in slow, rank[item.path]))   # stable: each file keeps its order


_SCHEDULING = {}


def pytest_sessionstart(session):
    from trainer.media.scheduling import current

    _SCHEDULING["start"] = current()


@_pytest.hookimpl(trylast=True)                 # after the item's own teardown has run
def pytest_runtest_teardown(item, nextitem):
    """A test (or a fixture it set up) that leaves this process at another CPU scheduling policy fails here. A
    real-time policy, which SVT-AV1 sets when run as root, passes to every process started afterwards, and a
    spinning real-time process starves the rest of the run (trainer.media.scheduling)."""
    from trainer.media.scheduling import current, restore

    now = current()
    if restore(_SCHEDULING.get("start")):
        raise RuntimeError(f"{item.nodeid} left the test process at scheduling policy {now[0]} (priority "
                           f"{now[1].sched_priority}); it started at policy {_SCHEDULING['start'][0]}")
