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

    from trainer.evaluate import load_eval_set

    model = trainer.load(tiny_model_dir)
    result = evaluate(model, synth_library.manifest, synth_library.manifest, cache_dir=feature_cache_dir)
    assert result["n"] == len(synth_library.rows)
    # The reported text->video ranks are those of each caption's own clip under the model's own vectors.
    data = load_eval_set(synth_library.manifest, model, feature_cache_dir, workers=1)
    sim = model.embed_text(data.texts) @ model.embed_clips(data.clip_feats, features=True).T
    own = sim[np.arange(len(data.texts)), data.clip_of]
    ranks = 1 + (sim > own[:, None]).sum(axis=1)
    assert result["t2v"] == pytest.approx(rank_metrics(ranks))
    # Fitted on the very clips it is scored on, the ridge map tells them apart: a broken baseline would not.
    assert result["baselines"]["meanpool_ridge"]["t2v"]["R@1"] == 1.0
    assert result["baselines"]["chance"]["t2v"] == chance_metrics(result["clips"])
    assert result["direction"]["n"] == sum(m is not None for m in data.motion)
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
                 "--cache-dir", str(feature_cache_dir), "--rerank", "3"])
    assert code == 0 and "re-rank top 3" in capsys.readouterr().out
    assert result["rewritten"] == 0                       # the command scores captions as written


def test_captions_go_through_the_given_reading_first(tiny_model_dir, synth_library, feature_cache_dir):
    import trainer
    from trainer.evaluate import evaluate

    model = trainer.load(tiny_model_dir)
    same = evaluate(model, synth_library.manifest, cache_dir=feature_cache_dir, read=lambda text: text)
    blank = evaluate(model, synth_library.manifest, cache_dir=feature_cache_dir, read=lambda text: "nothing")
    assert same["rewritten"] == 0 and blank["rewritten"] == blank["n"]
    assert blank["t2v"]["MnR"] != same["t2v"]["MnR"]      # every caption the same text: ranks no longer follow it


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_briefly_trained_model_beats_chance_on_held_out_clips(tmp_path):
    """Trained a few minutes on 64 generated clips, scored on 24 clips of (shape, colour, motion) combinations it
    never saw: far better than chance (measured on the default runtime and on torch's features, seeds 0 and 1:
    R@1 0.29-0.42 vs 0.04, R@5 0.79-0.88 vs 0.21, median rank 2-2.5 vs 12.5)."""
    # At the default learning rate. The tiny model's 3e-3 sat on the edge of a collapse here (align loss stuck
    # at ln 2): whether a run learned or landed at chance turned on float16-step differences in a few frame
    # features, which is all that separates ONNX Runtime's features from torch's.
    from tests.fixtures.model import tiny_config
    from trainer import load
    from trainer.evaluate import evaluate
    from trainer.synth import generate_split
    from trainer.train_config import TrainConfig
    from trainer.training import train

    split = generate_split(tmp_path / "data", train=64, test=24, seed=0, seconds=3.0, max_seconds=3.0, fps=4,
                           size=64, workers=1)
    # The tiny training settings, with the bundled MiniLM as the text encoder (a random one learns nothing here).
    config = tiny_config(tmp_path / "cache", epochs=8, random_init=False, model={}, lr=TrainConfig().lr)
    result = evaluate(load(train([split["train"]], tmp_path / "model", config)), split["test"],
                      cache_dir=tmp_path / "cache", workers=1)
    chance = result["baselines"]["chance"]["t2v"]
    assert result["clips"] == 24
    assert result["t2v"]["R@1"] >= 3 * chance["R@1"]
    assert result["t2v"]["R@5"] >= 2.5 * chance["R@5"]
    assert result["t2v"]["MedR"] <= chance["MedR"] / 2
