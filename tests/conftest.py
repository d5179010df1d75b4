"""Shared pytest fixtures, gathered from one module per pipeline stage."""
pytest_plugins = [
    "tests.fixtures.synth",
    "tests.fixtures.model",
    "tests.fixtures.store",
    "tests.fixtures.postgres",
    "tests.fixtures.ray_cluster",
]

import os as _os
import tempfile as _tempfile

# Exported ONNX encoders (and default-placed feature caches) go to a cache of this test session, never the
# user's; subprocesses inherit it.
_os.environ["VIDSEARCH_CACHE"] = _tempfile.mkdtemp(prefix="vidsearch-test-cache-")
