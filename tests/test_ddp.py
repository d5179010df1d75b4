"""DDP: two CPU processes on gloo under torchrun train one model; rank 0 writes the model dir."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import os, sys
    sys.path.insert(0, {root!r})
    from tests.fixtures.model import tiny_config
    from tests.test_train import synthetic_examples
    from trainer.training import fit, setup_distributed

    dist = setup_distributed("cpu")
    texts, feats = synthetic_examples(16)
    fit(texts, feats, {out!r}, tiny_config({cache!r}, epochs=2, batch_size=4, threads=1), dist)
    # One write(2) per rank: print() writes its pieces separately, and the two ranks share one pipe.
    os.write(1, f"rank {{dist.rank}} of {{dist.world}} done\\n".encode())
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_on_gloo(tmp_path):
    out = tmp_path / "ddp_model"
    script = tmp_path / "run_ddp.py"
    script.write_text(SCRIPT.format(root=str(ROOT), out=str(out), cache=str(tmp_path / "cache")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(script)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 0 of 2 done" in proc.stdout and "rank 1 of 2 done" in proc.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # 16 clips split over 2 ranks, 4 per rank per step: 2 optimizer steps per epoch; one writer.
    assert [r["step"] for r in rows if r["kind"] == "epoch"] == [2, 4]
    assert len([r for r in rows if r["kind"] == "step"]) == 4

    import trainer

    model = trainer.load(out)
    assert model.embed_text(["a red shape moves left"]).shape == (1, 32)
