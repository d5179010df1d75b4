"""Caption evaluation: generated descriptions scored with BLEU-1..4, METEOR, ROUGE-L and CIDEr (pycocoevalcap),
and read back against the manifest's `attrs` (shape, colour, motion, background), beside two baselines.

Baselines from the same run: nearest-neighbour captioning (the training caption of the training clip closest
in the model's embedding space, which can only repeat attribute combinations training showed) and the most
frequent training caption. References are the manifest's captions of each clip, or (`references="attrs"`)
every training-phrasing rendering of the clip's attrs by trainer.synth.
"""
from __future__ import annotations

import re
import time
from collections import Counter

import numpy as np

from .evaluate import load_eval_set

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


# ----------------------------------------------------------------------------- references


class _Replay:
    """Stands in for a numpy Generator: replays a prefix of choices, then picks 0, recording each choice's
    number of options, so that every path through a random sentence generator can be visited."""

    def __init__(self, prefix: list[int]):
        self.prefix, self.choices, self.sizes = prefix, [], []

    def integers(self, n: int) -> int:
        pick = self.prefix[len(self.choices)] if len(self.choices) < len(self.prefix) else 0
        self.choices.append(pick)
        self.sizes.append(int(n))
        return pick


def renderings(attrs: dict, phrasing: str = "train") -> list[str]:
    """Every distinct caption `trainer.synth.make_caption` can write for `attrs` in `phrasing`."""
    from .synth import make_caption

    out, prefix = {}, []
    while True:
        rng = _Replay(prefix)
        out[make_caption(attrs, phrasing, rng)] = None
        i = len(rng.sizes) - 1
        while i >= 0 and rng.choices[i] == rng.sizes[i] - 1:
            i -= 1
        if i < 0:
            return list(out)
        prefix = rng.choices[:i] + [rng.choices[i] + 1]


# ----------------------------------------------------------------------------- reading attributes back


def _words_pattern(words) -> re.Pattern:
    alternatives = sorted({w for w in words}, key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in alternatives) + r")\b")


def _verb_pattern(phrase: str) -> str:
    """'moves to the left' -> a regex for it in either number ('moves/move to the left')."""
    verb, _, rest = phrase.partition(" ")
    stem = re.sub(r"(es|s)$", "", verb)
    tail = "".join(r"\s+" + re.escape(word) for word in rest.split())
    return r"\b" + re.escape(stem) + r"\w*" + tail + r"\b"


class AttributeReader:
    """Reads which shapes, colours, motion and background a sentence names, in the generator's words
    (training and unseen phrasings of trainer.synth)."""

    def __init__(self):
        from . import synth

        self.shape_of = {w: s for table in synth.SHAPE_WORDS.values() for s, ws in table.items() for w in ws}
        self.shapes = _words_pattern(self.shape_of)
        self.colors = _words_pattern(synth.COLORS)
        self.motions = {m: re.compile("|".join(_verb_pattern(p) for table in synth.MOTION_WORDS.values()
                                               for p in table[m])) for m in synth.MOTIONS}
        phrases = {}
        for table in synth.BACKGROUND_WORDS.values():
            for kind, template in table.items():
                for colour in synth.BACKGROUND_COLORS:
                    phrases[template.format(c=colour)] = (kind, colour if "{c}" in template else None)
        self.backgrounds = phrases
        self.background = _words_pattern(phrases)

    def read(self, text: str) -> dict:
        """{"shapes": set, "colors": set, "motions": set, "background": (kind, colour or None) or None}."""
        text = text.lower()
        found = self.background.findall(text)
        rest = self.background.sub(" ", text)          # background colours are not object colours
        return {"shapes": {self.shape_of[w] for w in self.shapes.findall(rest)},
                "colors": set(self.colors.findall(rest)),
                "motions": {m for m, pat in self.motions.items() if pat.search(rest)},
                "background": self.backgrounds[found[0]] if len(set(found)) == 1 else None}

    def score(self, text: str, attrs: dict) -> dict:
        """Per attribute, whether `text` names exactly the right one(s) (None where attrs do not say)."""
        got = self.read(text)
        out = {"shape": None, "colour": None, "motion": None, "background": None}
        if attrs.get("shapes"):
            out["shape"] = got["shapes"] == set(attrs["shapes"])
        if attrs.get("colors"):
            out["colour"] = got["colors"] == set(attrs["colors"])
        if attrs.get("motion"):
            out["motion"] = got["motions"] == {attrs["motion"]}
        if attrs.get("background"):
            kind, _, colours = attrs["background"].partition(" ")
            want = (kind, colours.split("-")[0])
            out["background"] = got["background"] is not None and got["background"][0] == kind and \
                got["background"][1] in (None, want[1])
        return out


def attribute_accuracy(texts: list[str], attrs: list[dict]) -> dict:
    """Share of clips whose description names the right shape, colour, motion (with direction), background."""
    reader = AttributeReader()
    scores = [reader.score(t, a) for t, a in zip(texts, attrs)]
    out = {}
    for key in ("shape", "colour", "motion", "background"):
        hits = [s[key] for s in scores if s[key] is not None]
        out[key] = float(np.mean(hits)) if hits else None
    out["n"] = len(scores)
    return out


# ----------------------------------------------------------------------------- text metrics


def caption_metrics(hyps: list[str], refs: list[list[str]], meteor=None) -> dict:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of hypotheses against their references (PTB-tokenised, Java).

    meteor: a running pycocoevalcap Meteor to reuse (its Java process takes seconds to start); by default
    one is started and ended here."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
    res = tok.tokenize({i: [{"caption": h or "."}] for i, h in enumerate(hyps)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    own = meteor is None
    meteor = Meteor() if own else meteor
    try:
        met, _ = meteor.compute_score(gts, res)
    finally:
        if own:
            close_meteor(meteor)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {**{f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)}, "METEOR": float(met),
            "ROUGE-L": float(rouge), "CIDEr": float(cider)}


def close_meteor(meteor) -> None:
    """End the METEOR Java process now rather than at interpreter exit."""
    proc = getattr(meteor, "meteor_p", None)
    if proc is not None and proc.poll() is None:
        proc.stdin.close()
        proc.kill()
        proc.wait()


def scored(texts: list[str], refs: list[list[str]], attrs: list[dict], meteor=None) -> dict:
    """Text metrics plus attribute accuracy of one set of descriptions."""
    return {**caption_metrics(texts, refs, meteor), "attributes": attribute_accuracy(texts, attrs)}


# ----------------------------------------------------------------------------- linear probes


PROBED = ("shape", "colour", "motion")


def _probe_label(attrs: dict, key: str) -> str | None:
    """The one label of an attribute, or None where a clip has two objects (two shapes, two colours)."""
    if key == "motion":
        return attrs.get("motion")
    values = attrs.get("shapes" if key == "shape" else "colors") or []
    return values[0] if len(values) == 1 else None


def _pooled(seqs: list[np.ndarray]) -> np.ndarray:
    """(T, D) sequences -> (N, 2D): the mean over T and the last-minus-first change (which way things move)."""
    return np.stack([np.concatenate([x.mean(0), x[-1] - x[0]]) for x in seqs]).astype(np.float32)


def probe_views(model, clip_feats: list[np.ndarray]) -> dict[str, np.ndarray]:
    """What a linear probe reads per clip: the raw frame features (for a frame encoder with colour
    histograms, the network's features and the histograms apart) and VideoBERT's video states (frames only,
    without [CLS] and [SEP]), each pooled by `_pooled`."""
    states = model.video_states(clip_feats, features=True)
    colour = model.model.config.colour_dim
    views = {"frame features": _pooled([f[:, :f.shape[1] - colour] for f in clip_feats])}
    if colour:
        views["colour histograms"] = _pooled([f[:, -colour:] for f in clip_feats])
    return {**views, "video states": _pooled([s[1:-1] for s in states])}


def attribute_probe(train_x: np.ndarray, train_attrs: list[dict], test_x: np.ndarray,
                    test_attrs: list[dict]) -> dict:
    """Per attribute, the test accuracy of a logistic regression fitted on the training clips (one-object
    clips for shape and colour) and the majority-class rate it must beat; None where a split lacks labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = {}
    for key in PROBED:
        tr = [(i, _probe_label(a, key)) for i, a in enumerate(train_attrs) if _probe_label(a, key)]
        te = [(i, _probe_label(a, key)) for i, a in enumerate(test_attrs) if _probe_label(a, key)]
        if len({y for _, y in tr}) < 2 or not te:
            out[key] = None
            continue
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        probe.fit(train_x[[i for i, _ in tr]], [y for _, y in tr])
        hits = probe.predict(test_x[[i for i, _ in te]]) == np.array([y for _, y in te])
        majority = Counter(y for _, y in tr).most_common(1)[0][0]
        out[key] = {"accuracy": float(hits.mean()), "majority": float(np.mean([y == majority for _, y in te])),
                    "train": len(tr), "test": len(te)}
    return out


def probe_model(model, train_manifest, test_manifest, cache_dir=None, workers: int = 2) -> dict:
    """Linear probes of shape, colour and motion on each of `probe_views`, fitted on the training manifest's
    clips and scored on the test manifest's: whether what the decoder reads carries the attributes at all."""
    train = load_eval_set(train_manifest, model, cache_dir, workers)
    test = load_eval_set(test_manifest, model, cache_dir, workers)
    tr, te = probe_views(model, train.clip_feats), probe_views(model, test.clip_feats)
    return {view: attribute_probe(tr[view], train.clip_attrs, te[view], test.clip_attrs) for view in tr}


# ----------------------------------------------------------------------------- the whole evaluation


def nearest_neighbour_captions(model, clip_feats, train) -> list[str]:
    """For each clip, the training caption of the closest training clip in the model's embedding space."""
    test_vecs = model.embed_clips(clip_feats, features=True)
    train_vecs = model.embed_clips(train.clip_feats, features=True)
    caption_of = {}
    for text, j in zip(train.texts, train.clip_of):
        caption_of.setdefault(int(j), text)
    nearest = (test_vecs @ train_vecs.T).argmax(1)
    return [caption_of[int(j)] for j in nearest]


def evaluate_captions(model, manifest, train_manifest=None, cache_dir=None, workers: int = 2,
                      progress: bool = False, references: str = "manifest", num_beams: int | None = None,
                      max_length: int | None = None, rerank: bool = True) -> dict:
    """Describe every clip of a manifest with `model` (a trainer.VideoSearchModel with a caption decoder) and
    score the descriptions (`rerank`: as `describe` picks among its beams); with `train_manifest`, the two
    baselines are scored the same way."""
    if references not in ("manifest", "attrs"):
        raise ValueError(f"references={references!r}: choose 'manifest' or 'attrs'")
    if not model.can_describe:
        raise ValueError(f"model {model.identity['path']} has no caption decoder")
    data = load_eval_set(manifest, model, cache_dir, workers, progress)
    attrs = data.clip_attrs
    if references == "attrs":
        if not all(a.get("shapes") and a.get("motion") for a in attrs):
            raise ValueError(f"{manifest}: references='attrs' needs generated attrs on every line")
        refs = [renderings(a) for a in attrs]
    else:
        refs = [[t for t, j in zip(data.texts, data.clip_of) if j == k] for k in range(len(data.clip_feats))]
    start = time.perf_counter()
    hyps = model.describe(data.clip_feats, features=True, num_beams=num_beams, max_length=max_length,
                          rerank=rerank)
    seconds = time.perf_counter() - start
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    try:
        result = _scored_runs(model, hyps, refs, attrs, data, train_manifest, meteor, cache_dir, workers, progress)
    finally:
        close_meteor(meteor)
    result.update(clips=len(hyps), references=references, references_per_clip=float(np.mean([len(r) for r in refs])),
                  captions_per_s=len(hyps) / max(seconds, 1e-9), model_identity=model.identity,
                  examples=[{"description": h, "reference": r[0]} for h, r in zip(hyps[:5], refs[:5])])
    return result


def _scored_runs(model, hyps, refs, attrs, data, train_manifest, meteor, cache_dir, workers, progress) -> dict:
    """The model's descriptions scored, and the baselines' when a training manifest is given."""
    result = {"model": scored(hyps, refs, attrs, meteor),
              "baselines": {"nearest_neighbour": None, "most_frequent": None}}
    if train_manifest is not None:
        train = load_eval_set(train_manifest, model, cache_dir, workers, progress)
        nn = nearest_neighbour_captions(model, data.clip_feats, train)
        frequent = Counter(train.texts).most_common(1)[0][0]
        result["baselines"] = {"nearest_neighbour": scored(nn, refs, attrs, meteor),
                               "most_frequent": scored([frequent] * len(hyps), refs, attrs, meteor)}
    return result


def format_caption_report(result: dict) -> str:
    """A plain-text table of the model's caption scores and the baselines'."""
    lines = [f"{result['clips']} clips, {result['references_per_clip']:.1f} references each ({result['references']}), "
             f"{result['captions_per_s']:.1f} captions/s",
             f"{'':18}" + " ".join(f"{m:>8}" for m in METRICS) + "   shape colour motion backgr."]
    rows = [("model", result["model"])] + [(k, v) for k, v in result["baselines"].items() if v]
    for name, r in rows:
        a = r["attributes"]
        acc = " ".join("   n/a" if a[k] is None else f"{a[k]:6.3f}"
                       for k in ("shape", "colour", "motion", "background"))
        lines.append(f"{name:18}" + " ".join(f"{r[m]:8.3f}" for m in METRICS) + "  " + acc)
    for ex in result["examples"]:
        lines.append(f"  e.g. {ex['description']!r}  (reference: {ex['reference']!r})")
    return "\n".join(lines)
