"""A short soak: the server under wrk load while index runs change the library and two of them are SIGKILLed."""
from __future__ import annotations

import shutil

import pytest

from benchmarks import soak

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_short_soak_loses_nothing(tiny_model_dir, tmp_path):
    assert shutil.which("wrk"), "wrk is not installed; `make test` installs it"
    r = soak.soak(tmp_path, tiny_model_dir, seconds=20)
    assert r["requests"] > 0 and r["5xx"] == 0, r
    assert r["kills"] == soak.KILLS and r["rounds"] >= soak.KILLS + 1
    assert r["visible_all"], r["problems"]
    assert r["consistency"] == [], r["consistency"]
    # Flat over the run: a leaked descriptor per request or per refresh would show in hundreds.
    assert r["end"]["fds"] - r["start"]["fds"] < 32, (r["start"], r["end"])
    section = soak.section_of(r, soak.Section("soak", "Reliability"))
    assert "Targets met" in section.markdown()
