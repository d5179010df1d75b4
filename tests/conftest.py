"""Shared pytest fixtures, gathered from one module per pipeline stage."""
pytest_plugins = [
    "tests.fixtures.synth",
    "tests.fixtures.model",
    "tests.fixtures.store",
    "tests.fixtures.postgres",
    "tests.fixtures.ray_cluster",
]
