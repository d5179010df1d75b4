"""What the frame encoder saw behind each training word: the grounding of caption words in ImageNet concepts.

An ImageNet-pretrained frame encoder names what it sees in 1,000 classes ("ping-pong ball", "crate"). Averaging
those class probabilities over the clips whose captions use a word gives the word's *concept profile*: in a
library of coloured shapes, the clips captioned "circle" look like ping-pong and tennis balls to the classifier
far more often than the library as a whole does. The profiles, and the class names they are over, are saved
beside a model at training time (`word_concepts.npz`); search reads the class names to tell words that name real
subjects (search.reading). Models whose frame encoder has no ImageNet classifier (CLIP) simply have none.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

CONCEPTS_FILE = "word_concepts.npz"


@dataclass
class WordConcepts:
    """Concept profiles of training words.

    words: the training words; profiles: (W, C) mean class probability over the clips of the captions that use
    each word; base: (C,) the mean over every clip; labels: the C class names.
    """

    words: list[str]
    profiles: np.ndarray
    base: np.ndarray
    labels: tuple[str, ...]

    def __post_init__(self):
        self.profiles = np.asarray(self.profiles, dtype=np.float32)
        self.base = np.asarray(self.base, dtype=np.float32)
        self.labels = tuple(self.labels)
        if self.profiles.shape != (len(self.words), len(self.labels)) or self.base.shape != (len(self.labels),):
            raise ValueError(f"word concepts: profiles {self.profiles.shape} and base {self.base.shape} do not "
                             f"match {len(self.words)} words x {len(self.labels)} labels")
        self._row = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def fit(cls, words_of: Iterable[Iterable[str]], clip_probs: np.ndarray, labels) -> "WordConcepts":
        """Profiles from each caption's words (`words_of`, one iterable per caption) and the (N, C) class
        probabilities of each caption's clip."""
        clip_probs = np.asarray(clip_probs, dtype=np.float32)
        sums, counts = {}, {}
        for caption_words, probs in zip(words_of, clip_probs):
            for w in set(caption_words):
                sums[w] = sums.get(w, 0.0) + probs
                counts[w] = counts.get(w, 0) + 1
        words = sorted(sums)
        profiles = np.stack([sums[w] / counts[w] for w in words]) if words else np.zeros((0, len(labels)))
        return cls(words, profiles, clip_probs.mean(0), labels)

    def save(self, model_dir) -> Path:
        """Write the profiles into a model dir, atomically."""
        path = Path(model_dir) / CONCEPTS_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, words=np.array(self.words, dtype=str), profiles=self.profiles.astype(np.float16),
                     base=self.base, labels=np.array(self.labels, dtype=str))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, model_dir) -> "WordConcepts | None":
        """The profiles saved beside a model, or None for a model saved without them."""
        path = Path(model_dir) / CONCEPTS_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls([str(w) for w in data["words"]], data["profiles"], data["base"],
                           [str(x) for x in data["labels"]])
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(f"{path}: not a word-concepts file ({exc})") from exc


def caption_concepts(encoder, texts: list[str], feats: list[np.ndarray]) -> WordConcepts | None:
    """Concept profiles of the content words of `texts`, each caption's clip given as (T, F) frame features of
    `encoder`; None when the encoder has no ImageNet classifier."""
    from .lexicon import content_words

    probs = getattr(encoder, "label_probs", None)
    if probs is None or not feats:
        return None
    bounds = np.cumsum([0] + [len(f) for f in feats])
    per_frame = probs(np.concatenate(feats))
    per_clip = np.stack([per_frame[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])])
    return WordConcepts.fit([content_words(t) for t in texts], per_clip, encoder.label_names)
