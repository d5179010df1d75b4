"""The training vocabulary saved beside a model: the content words of its captions, each with captions it is used in.

Search reads it (search.reading) to put a query's unfamiliar words into words the model was trained on; the
trainer only writes it. A content word is any word that is not an English function word; direction words stay
content words, since in video captions they carry the motion ("moves up").
"""
from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable

WORDS_FILE = "caption_words.json"    # beside a model: its training vocabulary, with example captions

WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")
# Words of scikit-learn's stop list that name directions and places: in video captions they are content
# ("moves up"), and "upward" should find them.
DIRECTION_WORDS = frozenset("up down above below top bottom front back behind beside side".split())


@lru_cache(maxsize=1)
def stop_words() -> frozenset:
    """English function words (scikit-learn's English stop list): never part of the vocabulary, never
    rewritten."""
    return _sklearn_stop_list() - DIRECTION_WORDS


def _sklearn_stop_list() -> frozenset:
    """scikit-learn's English stop list, read from its own module file: importing scikit-learn for it cost
    every process that reads queries about 2 s. Through the package when the file is not where it was."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    path = Path(spec.origin).parent / "feature_extraction" / "_stop_words.py" if spec and spec.origin else None
    if path is not None and path.is_file():
        module_spec = importlib.util.spec_from_file_location("_vidsearch_sklearn_stop_words", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        words = getattr(module, "ENGLISH_STOP_WORDS", None)
        if isinstance(words, frozenset) and words:
            return words
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def tokens(text: str) -> list[re.Match]:
    """Lower-case word matches of `text` (hyphenated words and contractions stay whole)."""
    return list(WORD.finditer(text.lower()))


def content_words(text: str) -> set[str]:
    """The distinct words of `text` that are not stop words: what the training vocabulary is made of."""
    return {m.group() for m in tokens(text)} - stop_words()


def caption_vocabulary(captions: Iterable[str], contexts: int = 8, min_count: int = 1) -> dict[str, list[str]]:
    """Content word -> up to `contexts` captions it occurs in, for the words used at least `min_count` times."""
    out, counts = {}, {}
    for caption in captions:
        for word in content_words(caption):
            counts[word] = counts.get(word, 0) + 1
            seen = out.setdefault(word, [])
            if len(seen) < contexts:
                seen.append(caption)
    return {w: out[w] for w in sorted(out) if counts[w] >= min_count}


def save_vocabulary(vocabulary: dict[str, list[str]], out_dir) -> Path:
    """Write `vocabulary` (from `caption_vocabulary`) into a model dir, atomically."""
    path = Path(out_dir) / WORDS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(vocabulary, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_vocabulary(model_dir) -> dict[str, list[str]]:
    """The training vocabulary saved beside a model, or {} for a model saved without one; ValueError naming the
    file when it is not a vocabulary."""
    path = Path(model_dir) / WORDS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON vocabulary ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path}: expected an object of word -> list of captions")
    return {str(k): [str(c) for c in v] for k, v in data.items()}
