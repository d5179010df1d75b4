"""Evaluation: rank metrics on known similarity matrices, baselines, the JSON report and `vidsearch eval`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.evaluate import (EvalSet, chance_metrics, direction_accuracy, format_report, rank_metrics,
                              rerank_scores, retrieval)


def test_rank_metrics_from_known_ranks():
    m = rank_metrics(np.array([1, 2, 6, 11]))
    assert m == {"R@1": 0.25, "R@5": 0.5, "R@10": 0.75, "MedR": 4.0, "MnR": 5.0}


def test_retrieval_ranks_each_caption_against_its_own_clip():
    # 3 clips; captions 0 and 1 describe clip 0, caption 2 clip 1, caption 3 clip 2.
    clip_of = np.array([0, 0, 1, 2])
    sim = np.array([[0.9, 0.1, 0.2],     # rank 1
                    [0.1, 0.5, 0.6],     # own clip ranks 3rd
                    [0.2, 0.8, 0.1],     # rank 1
                    [0.7, 0.6, 0.5]])    # rank 3
    r = retrieval(sim, clip_of)
    assert r["t2v"]["R@1"] == 0.5 and r["t2v"]["MnR"] == 2.0 and r["t2v"]["MedR"] == 2.0
    # v2t: clip 0's best own caption (0.9) is first; clip 1's caption (0.8) first; clip 2's (0.5) is behind 0.6.
    assert r["v2t"]["R@1"] == pytest.approx(2 / 3) and r["v2t"]["MnR"] == pytest.approx(4 / 3)


def test_chance_and_direction():
    assert chance_metrics(20) == {"R@1": 0.05, "R@5": 0.25, "R@10": 0.5, "MedR": 10.5, "MnR": 10.5}
    assert chance_metrics(4)["R@10"] == 1.0
    data = EvalSet(texts=["l", "r", "x"], clip_of=np.array([0, 1, 1]), clip_feats=[], motion=["left", "right", None],
                   clip_motion=["left", "right"])
    sim = np.array([[0.9, 0.1], [0.8, 0.2], [0.0, 1.0]])
    assert direction_accuracy(sim, data) == {"accuracy": 0.5, "n": 2}


def test_evaluate_reports_model_and_baselines(tiny_model_dir, synth_library, feature_cache_dir):
    import trainer
    from trainer.evaluate import evaluate

    model = trainer.load(tiny_model_dir)
    result = evaluate(model, synth_library.manifest, synth_library.manifest, cache_dir=feature_cache_dir)
    assert result["n"] == len(synth_library.rows)
    for block in (result, result["baselines"]["chance"], result["baselines"]["meanpool_ridge"]):
        for d in ("t2v", "v2t"):
            assert set(block[d]) == {"R@1", "R@5", "R@10", "MedR", "MnR"}
            assert 0.0 <= block[d]["R@1"] <= block[d]["R@5"] <= block[d]["R@10"] <= 1.0
            assert 1.0 <= block[d]["MedR"] <= result["n"]
    assert result["baselines"]["chance"]["t2v"]["R@1"] == pytest.approx(1 / result["clips"])
    assert 0.0 <= result["direction"]["accuracy"] <= 1.0 and result["direction"]["n"] == result["n"]
    assert "meanpool_ridge" in format_report(result)
    assert result["rewritten"] == 0         # the training captions use only words the model knows


def test_rerank_reorders_only_each_captions_top_k():
    class Model:                            # alignment probability: how often the clip's id appears in the text
        def match(self, texts, clips, features):
            return np.array([t.count(str(int(c[0, 0]))) / 10 for t, c in zip(texts, clips)])

    sim = np.array([[0.9, 0.8, 0.1], [0.2, 0.5, 0.7]])
    clips = [np.full((2, 1), i, np.float32) for i in range(3)]
    out = rerank_scores(Model(), ["1", "0 0"], clips, sim, k=2)
    assert list(np.argsort(-out[0])) == [1, 0, 2]      # clip 1 re-scored above clip 0; clip 2 was not a candidate
    assert list(np.argsort(-out[1])[2:]) == [0]        # clip 0 is named twice but was not in this caption's top 2
    assert out[0, 2] == sim[0, 2] and out[1, 0] == sim[1, 0]


def test_cli_eval_json(tiny_model_dir, synth_library, feature_cache_dir, capsys):
    from webui.cli import main

    code = main(["eval", str(synth_library.manifest), "--model", str(tiny_model_dir), "--train",
                 str(synth_library.manifest), "--cache-dir", str(feature_cache_dir), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"t2v", "v2t", "baselines", "n"} <= set(result)
    assert set(result["baselines"]) == {"chance", "meanpool_ridge"}
    assert isinstance(result["n"], int)
    code = main(["eval", str(synth_library.manifest), "--model", str(tiny_model_dir),
                 "--cache-dir", str(feature_cache_dir), "--no-rewrite", "--rerank", "3"])
    assert code == 0 and "re-rank top 3" in capsys.readouterr().out
