"""Retrieval evaluation: text->video and video->text recall, median and mean rank, beside two baselines.

Each caption's own clip is its positive. The baselines come from the same run: chance, and mean-pooled frame
features mapped into the model's text space by ridge regression fitted on a training manifest.
Caption evaluation (`evaluate_captions`) lives in trainer.caption_eval.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .features import FeatureCache
from .training import resample_frames


@dataclass
class EvalSet:
    """Captions, the distinct clips they describe, and which clip each caption belongs to."""

    texts: list[str]
    clip_of: np.ndarray                # (M,) clip index of each caption
    clip_feats: list[np.ndarray]       # per clip (T, F) frame features
    motion: list[str | None]           # per caption: the motion named in the manifest's attrs, if any
    clip_motion: list[str | None]      # per clip
    clip_attrs: list[dict] | None = None   # per clip: the manifest's attrs ({} where it gives none)


def _raw_attrs(manifest) -> list[dict]:
    rows = []
    for line in Path(manifest).read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line).get("attrs") or {})
    return rows


def load_eval_set(manifest, model, cache_dir=None, workers: int = 2, progress: bool = False) -> EvalSet:
    """Read a manifest and the frame features of its clips (through the feature cache)."""
    from .captions import read_manifest

    captions = read_manifest(manifest)
    if not captions:
        raise ValueError(f"{manifest}: no captions")
    attrs = _raw_attrs(manifest)
    attrs = attrs if len(attrs) == len(captions) else [{}] * len(captions)
    cache = FeatureCache(cache_dir, model.frame_encoder.spec, model.sampling)
    videos = cache.load_all([c.video for c in captions], model.frame_encoder, workers, progress)
    keys, clip_feats, clip_motion, texts, clip_of, motion, clip_attrs = {}, [], [], [], [], [], []
    for c, a in zip(captions, attrs):
        if c.video not in videos:
            continue
        key = (c.video, c.start, c.end)
        if key not in keys:
            keys[key] = len(clip_feats)
            clip_feats.append(resample_frames(videos[c.video].window(c.start, c.end), model.model.config.max_frames))
            clip_motion.append(a.get("motion"))
            clip_attrs.append(a)
        texts.append(c.text)
        clip_of.append(keys[key])
        motion.append(a.get("motion"))
    if not texts:
        raise ValueError(f"{manifest}: none of the videos could be decoded")
    return EvalSet(texts, np.array(clip_of), clip_feats, motion, clip_motion, clip_attrs)


def rank_metrics(ranks: np.ndarray) -> dict:
    """1-based ranks of the positives -> R@1/5/10 (fractions), median and mean rank."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {f"R@{k}": float((ranks <= k).mean()) for k in (1, 5, 10)}
    out["MedR"] = float(np.median(ranks))
    out["MnR"] = float(ranks.mean())
    return out


def chance_metrics(candidates: int) -> dict:
    """What a random ranking of `candidates` items with one positive scores in expectation."""
    n = max(int(candidates), 1)
    out = {f"R@{k}": min(k, n) / n for k in (1, 5, 10)}
    out["MedR"] = out["MnR"] = (n + 1) / 2
    return out


def retrieval(sim: np.ndarray, clip_of: np.ndarray) -> dict:
    """sim (M captions, N clips) -> {"t2v": metrics, "v2t": metrics}.

    v2t ranks all captions for each clip; the clip's best-ranked own caption is its positive.
    """
    m, n = sim.shape
    pos = sim[np.arange(m), clip_of]
    t2v = 1 + (sim > pos[:, None]).sum(1)
    ranks_v = []
    for j in range(n):
        own = np.flatnonzero(clip_of == j)
        if len(own) == 0:
            continue
        best = sim[own, j].max()
        ranks_v.append(1 + (sim[:, j] > best).sum())
    return {"t2v": rank_metrics(t2v), "v2t": rank_metrics(np.array(ranks_v))}


def direction_accuracy(sim: np.ndarray, data: EvalSet) -> dict:
    """Among captions that name a motion, how often the top clip moves that way."""
    named = [i for i, mo in enumerate(data.motion) if mo]
    if not named:
        return {"accuracy": None, "n": 0}
    top = sim[named].argmax(1)
    hits = [data.clip_motion[j] == data.motion[i] for i, j in zip(named, top)]
    return {"accuracy": float(np.mean(hits)), "n": len(named)}


def ridge_baseline(model, data: EvalSet, train: EvalSet, text_test: np.ndarray) -> np.ndarray:
    """Similarity of test captions to mean-pooled test clip features mapped by ridge into the text space."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train = np.stack([train.clip_feats[j].mean(0) for j in train.clip_of])
    y_train = model.embed_text(train.texts)
    reg = make_pipeline(StandardScaler(), RidgeCV(alphas=(1.0, 10.0, 100.0, 1000.0, 10000.0)))
    reg.fit(x_train, y_train)
    pred = reg.predict(np.stack([f.mean(0) for f in data.clip_feats]))
    pred /= np.linalg.norm(pred, axis=1, keepdims=True).clip(1e-12)
    return text_test @ pred.T


def rerank_scores(model, texts: list[str], clip_feats: list, sim: np.ndarray, k: int) -> np.ndarray:
    """`sim` with each caption's top-k clips re-scored by alignment probability (placed above the rest)."""
    out = sim.copy()
    k = min(k, sim.shape[1])
    for i, text in enumerate(texts):
        top = np.argsort(-sim[i], kind="stable")[:k]
        probs = model.match([text] * k, [clip_feats[j] for j in top], features=True)
        out[i, top] = sim.max() + 1.0 + probs
    return out


def evaluate(model, manifest, train_manifest=None, cache_dir=None, workers: int = 2, progress: bool = False,
             read=None, rerank: int = 0) -> dict:
    """Score `model` (a trainer.VideoSearchModel) on a manifest; see the module docstring for the baselines.

    read: a function text -> text that test captions go through first, as queries do in search (the dense channel
    reads them with `search.QueryReader`); None embeds them as written.
    rerank: also score text->video after re-ranking each caption's top `rerank` clips with the alignment head,
    as search does with rerank=1 (result["rerank"]).
    """
    data = load_eval_set(manifest, model, cache_dir, workers, progress)
    texts = [read(t) for t in data.texts] if read is not None else list(data.texts)
    text = model.embed_text(texts)
    video = model.embed_clips(data.clip_feats, features=True)
    sim = text @ video.T
    result = {**retrieval(sim, data.clip_of), "direction": direction_accuracy(sim, data)}
    if rerank:
        reranked = rerank_scores(model, texts, data.clip_feats, sim, int(rerank))
        result["rerank"] = {"k": int(rerank), "t2v": retrieval(reranked, data.clip_of)["t2v"],
                            "direction": direction_accuracy(reranked, data)}
    chance = {"t2v": chance_metrics(len(data.clip_feats)), "v2t": chance_metrics(len(data.texts))}
    baselines = {"chance": chance, "meanpool_ridge": None}
    if train_manifest is not None:
        train = load_eval_set(train_manifest, model, cache_dir, workers, progress)
        ridge_sim = ridge_baseline(model, data, train, text)
        baselines["meanpool_ridge"] = {**retrieval(ridge_sim, data.clip_of),
                                       "direction": direction_accuracy(ridge_sim, data)}
    result["baselines"] = baselines
    result["n"] = len(data.texts)
    result["rewritten"] = sum(a != b for a, b in zip(texts, data.texts))
    result["clips"] = len(data.clip_feats)
    result["model"] = model.identity
    return result


def format_report(result: dict) -> str:
    """A plain-text table of the model's figures and the baselines."""
    rows = [("model", result)] + [(name, r) for name, r in result["baselines"].items() if r]
    lines = [f"{result['n']} captions ({result.get('rewritten', 0)} rewritten into training words), "
             f"{result['clips']} clips",
             f"{'':16}{'dir':>5} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MedR':>6} {'MnR':>7}  direction"]
    if result.get("rerank"):
        rows.insert(1, (f"re-rank top {result['rerank']['k']}", result["rerank"]))
    for name, r in rows:
        for d in ("t2v", "v2t"):
            if d not in r:
                continue
            m = r[d]
            acc = (r.get("direction") or {}).get("accuracy") if d == "t2v" else None
            tail = f"  {acc:.3f}" if acc is not None else ""
            lines.append(f"{name:16}{d:>5} {m['R@1']:6.3f} {m['R@5']:6.3f} {m['R@10']:6.3f} "
                         f"{m['MedR']:6.1f} {m['MnR']:7.2f}{tail}")
    return "\n".join(lines)
