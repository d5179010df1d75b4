"""The concept channel's query side: a text query read as weights over the frame encoder's ImageNet classes.

Two readings, as the words allow:

* WordNet (through the shipped class table, trainer.classes): a query noun, or a collocation of up to three words,
  reaches every class under any of its senses by hyponym closure, the classes it names by lemma match
  ("motorcycle" -> moped; "vehicle" -> seventy classes; "tabby cat" -> tabby), and the classes WordNet makes
  its parts ("car" -> seat belt, car mirror: a car's interior is a seat belt to the classifier). Each reached
  class weighs 1, so a clip's concept score is the share of its probability mass on what the query names.
* ConSE (Norouzi et al., 2014, "Zero-Shot Learning by Convex Combination of Semantic Embeddings") for content
  words WordNet does not reach ("kitten", "puppy"), except words read only as adjectives or adverbs ("red",
  "old": they describe a subject and name none, so "red" reaches no red wine): the sentence-embedding cosine
  between the word and each class. Both sides are described alike (`sense_text`): a class by its names, what
  it is a kind of and its gloss ("sorrel, a kind of horse: a horse of a brownish orange ..."), and a word usually
  read as a noun by each of its noun senses the same way ("tomcat, a kind of domestic cat: male cat"), the closest sense
  counting. A bare word is a poor sentence ("officer" alone lands nearest the admiral butterfly), and its
  senses say what it names; other words (verbs, words WordNet lacks) are embedded as typed. A class counts only
  when the word is closer to it than random letter strings get to any class (`null_cosine`, measured on the
  class embeddings), and weighs what the cosine exceeds that by, scaled to [0, 1]; the clip's score is then
  ConSE's convex combination of its class probabilities with those similarities.

A clip counts as evidence only above chance (`chance_score`): more than a random set of classes with the same
weights would score on average, sum(weights) / classes. The store keeps each clip's classes above 1 / classes
(indexer.encode), so a class the classifier holds at less than an uninformed guess never matches.

Class embeddings and the chance level are computed once per sentence encoder. For the bundled MiniLM they ship
in trainer/data (`python -m search.concepts --write`, see `write_shipped`); another encoder's are built on first
use (`Engine.warm` does it) and kept in a cache file. With the bundled MiniLM, the ConSE readings of the 11,000
words SemCor tagged ship too (`shipped_words`). A query then costs one lookup per word and, for the words WordNet
does not reach that neither ship nor were met before, one encoder pass over their texts.
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Encode = Callable[[list[str]], np.ndarray]  # texts -> (N, D) L2-normalised rows

WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")
MAX_NGRAM = 3  # longest collocation looked up ("golden retriever", "african hunting dog")
MAX_WORDS = 64  # content words read from one query; the rest of a very long query is ignored
CONSE_TOP = 10  # classes one word may reach by similarity (ConSE's T)
NULL_PROBES = 32  # random letter strings that measure the cosine a meaningless word reaches
# The shipped embeddings serve an encoder that embeds the null probes as the one they were made with did: the
# same weights on another runtime (ONNX, torch; float16 storage) agree far closer than this.
SAME_ENCODER = 0.99
SHIPPED = Path(__file__).resolve().parent.parent / "trainer" / "data" / "class_embeddings.npz"
QUERY_CACHE = 1024  # query readings kept (a search and its `read_as` read the same text)
SIMILARITY = "similarity"
WORDNET = "wordnet"


@dataclass(frozen=True)
class ConceptMatch:
    """Query words and the classes they reached, strongest first, by `evidence` ("wordnet" or "similarity")."""

    source: str
    classes: tuple[str, ...]
    evidence: str

    def to_dict(self, most: int = 10) -> dict:
        """{"from", "classes" (the first `most`), "count" (all of them), "evidence"}."""
        return {"from": self.source, "classes": list(self.classes[:most]), "count": len(self.classes),
                "evidence": self.evidence}


@dataclass(frozen=True)
class ConceptQuery:
    """A query's concept weights (class index -> weight in (0, 1]) and how its words reached them."""

    weights: dict
    matches: tuple[ConceptMatch, ...] = ()


def query_words(text: str) -> list[str]:
    """Lower-case words of a query (hyphenated words and contractions whole), function words left out."""
    from trainer.lexicon import stop_words

    stops = stop_words()
    return [w for w in WORD.findall(text.lower()) if w not in stops][:MAX_WORDS]


def chance_score(weights: dict, classes: int) -> float:
    """The concept score that a random set of classes with the same weights gets on average, against any clip
    (its probabilities sum to at most 1 over `classes` classes): sum(weights) / classes. A clip scoring above
    it puts more probability on what the query names than a classifier that knows nothing would."""
    return float(sum(weights.values())) / max(int(classes), 1)


def _cache_dir() -> Path:
    root = os.environ.get("VIDSEARCH_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME")
                                                             or os.path.expanduser("~/.cache"), "vidsearch")
    return Path(root)


def random_strings(n: int) -> list[str]:
    """`n` random lowercase letter strings (3 to 9 letters, fixed seed): queries that mean nothing."""
    rng = random.Random(0)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(n)]


class ClassEmbeddings:
    """Sentence embeddings of every class's names and of each class described, the chance cosine, and (shipped
    for the bundled encoder) the ConSE readings of the words people use, so that reading them costs no encoder
    pass: a noun's sense texts take 10 to 50 ms to embed on a CPU."""

    def __init__(self, names: np.ndarray, glossed: np.ndarray, null_cosine: float, words: dict | None = None):
        self.names, self.glossed, self.null_cosine = names, glossed, float(null_cosine)
        self.words: dict[str, tuple[tuple[int, float], ...]] = words or {}

    @classmethod
    def build(cls, encode: Encode, classes: list[dict]) -> ClassEmbeddings:
        names, described = _class_texts(classes)
        emb = np.asarray(encode(names + described), np.float32)
        out = cls(emb[:len(classes)], emb[len(classes):], 0.0)
        probes = np.asarray(encode(random_strings(NULL_PROBES)), np.float32)
        out.null_cosine = float(out.similarity(probes).max())
        return out

    @classmethod
    def cached(cls, encode: Encode, classes: list[dict], key: str) -> ClassEmbeddings:
        """The shipped embeddings when `encode` is the encoder they were made with, else `build`, kept in a
        cache file named by `key` (the encoder's identity) and the class texts."""
        shipped = cls.shipped(encode, classes)
        if shipped is not None:
            return shipped
        digest = hashlib.sha256((key + _class_texts_digest(classes)).encode()).hexdigest()[:16]
        path = _cache_dir() / f"class-embeddings-{digest}.npz"
        try:
            return cls.load(path)
        except (OSError, KeyError, ValueError):
            pass
        out = cls.build(encode, classes)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            out.save(path)
        except OSError:  # a read-only home: the embeddings are rebuilt next time
            pass
        return out

    @classmethod
    def shipped(cls, encode: Encode, classes: list[dict], path: Path | None = None) -> ClassEmbeddings | None:
        """The embeddings shipped in `path` (default SHIPPED) if they describe these classes and `encode` embeds
        their null probes as the encoder they were made with did; else None."""
        try:
            path = path or SHIPPED
            with np.load(path, allow_pickle=False) as data:
                probes, texts = np.asarray(data["probes"], np.float32), str(data["texts"])
                if texts != _class_texts_digest(classes):
                    return None
                out = cls(data["names"], data["glossed"], float(data["null_cosine"]), _read_words(data))
        except (OSError, KeyError, ValueError):
            return None
        ours = np.asarray(encode(random_strings(len(probes))), np.float32)
        if ours.shape != probes.shape or float(np.min(np.sum(ours * probes, axis=1))) < SAME_ENCODER:
            return None
        return out

    @classmethod
    def load(cls, path: Path) -> ClassEmbeddings:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["names"], data["glossed"], float(data["null_cosine"]))

    def save(self, path: Path, probes: np.ndarray | None = None, classes: list[dict] | None = None) -> None:
        """Write atomically; with `probes` (the null probes' embeddings) and `classes`, as a shippable file."""
        extra = {} if probes is None else {"probes": np.asarray(probes, np.float16),
                                           "texts": np.array(_class_texts_digest(classes))}
        if extra and self.words:
            extra.update(_word_arrays(self.words))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, names=self.names.astype(np.float16 if extra else np.float32),
                     glossed=self.glossed.astype(np.float16 if extra else np.float32),
                     null_cosine=np.float32(self.null_cosine), **extra)
        os.replace(tmp, path)

    def similarity(self, vectors: np.ndarray) -> np.ndarray:
        """(Q, D) unit vectors -> (Q, C) cosine to each class, the better of its names and its description."""
        v = np.atleast_2d(np.asarray(vectors, np.float32))
        return np.maximum(v @ self.names.T, v @ self.glossed.T)

    def conse(self, encode: Encode, words: list[str]) -> list[tuple[tuple[int, float], ...]]:
        """ConSE: for each word, (class, weight) of the classes it is closer to than chance, strongest first. The
        words' texts (`word_texts`) go to the encoder in one call; a word counts by its closest text."""
        texts = [word_texts(w) for w in words]
        rows = self.similarity(encode([t for ts in texts for t in ts]))
        span = max(1.0 - self.null_cosine, 1e-6)
        out = []
        for ts, end in zip(texts, np.cumsum([len(ts) for ts in texts])):
            row = rows[end - len(ts):end].max(axis=0)
            top = np.argsort(-row, kind="stable")[:CONSE_TOP]
            out.append(tuple((int(c), float((row[c] - self.null_cosine) / span)) for c in top
                             if row[c] > self.null_cosine))
        return out

    def known(self, word: str) -> tuple[tuple[int, float], ...] | None:
        """The shipped reading of `word`; for a word read by its noun senses, else that of its base form ("coins":
        "coin", the same senses); None if none ships. A word read as typed has only its own."""
        from trainer.senses import base_forms

        if word in self.words:
            return self.words[word]
        form = next((f for f in sorted(base_forms(word)) if f in self.words), None)
        # Only then read its senses (which `conse` reads again for a word that ships no reading).
        return None if form is None or word_texts(word) == [word] else self.words[form]


def _word_arrays(words: dict) -> dict[str, np.ndarray]:
    """The word readings as flat arrays: each word's (class, weight) pairs from starts[i] to starts[i + 1]."""
    pairs = list(words.values())
    return {"words": np.array(list(words), dtype=str),
            "word_starts": np.cumsum([0] + [len(p) for p in pairs]).astype(np.int32),
            "word_classes": np.array([c for p in pairs for c, _ in p], np.int16),
            "word_weights": np.array([x for p in pairs for _, x in p], np.float16)}


def _read_words(data) -> dict[str, tuple[tuple[int, float], ...]]:
    if "words" not in data:
        return {}
    # As Python lists first: slicing numpy arrays 11,000 times cost every engine's start-up 70 ms.
    starts = data["word_starts"].tolist()
    pairs = list(zip(data["word_classes"].tolist(), data["word_weights"].astype(np.float32).tolist()))
    return {w: tuple(pairs[a:b]) for w, a, b in zip(data["words"].tolist(), starts[:-1], starts[1:])}


def shipped_words() -> list[str]:
    """The words whose ConSE readings ship with the bundled encoder: every one-word lemma that SemCor tagged in
    some sense (the words people use), except those the class table takes to a class and the describing ones."""
    from trainer.classes import class_table
    from trainer.senses import wordnet

    table, wn = class_table(), wordnet()
    skip = set(table["lexicon"]) | set(table["describing"])
    out = set()
    for pos in "nvar":
        for name in wn.all_lemma_names(pos):
            if name.isalpha() and name.islower() and name not in skip and name not in out and any(
                    lemma.count() for syn in wn.synsets(name, pos) for lemma in syn.lemmas()
                    if lemma.name().lower() == name):
                out.add(name)
    return sorted(out)


def sense_text(names: str, kinds, gloss: str) -> str:
    """One sense put to the sentence encoder, a class's or a query word's alike: its names, what it is a kind
    of, and its gloss."""
    kind = f", a kind of {', '.join(kinds)}" if kinds else ""
    return f"{names}{kind}: {gloss}"


def word_texts(word: str) -> list[str]:
    """What the sentence encoder reads for a query word: each noun sense of a word usually read as a noun
    (`sense_text`, named by the sense's own lemma: "bricks" reads as "brick"), else the word as typed."""
    from trainer.classes import kinds
    from trainer.senses import base_forms, pos_of, readings

    forms = {word} | base_forms(word)
    nouns = [syn for syn in readings(word) if pos_of(syn) == "n"]
    return [sense_text(_lemma_in(syn, forms, word), kinds(syn), syn.definition()) for syn in nouns] or [word]


def _lemma_in(syn, forms: set, default: str) -> str:
    """The name of `syn` that is one of `forms` (the word, then its base forms), else `default`."""
    names = [n.replace("_", " ").lower() for n in syn.lemma_names()]
    return default if default in names else next((n for n in names if n in forms), default)


def _class_texts(classes: list[dict]) -> tuple[list[str], list[str]]:
    """Each class's names, and each class described (`sense_text`)."""
    names = [", ".join(c["names"]) for c in classes]
    return names, [sense_text(n, c.get("kinds", ()), c["gloss"]) for n, c in zip(names, classes)]


def _class_texts_digest(classes: list[dict]) -> str:
    return hashlib.sha256(repr(_class_texts(classes)).encode()).hexdigest()[:16]


def write_shipped(path: Path | None = None) -> Path:
    """Embed every class with the bundled sentence encoder (all-MiniLM-L6-v2) and write the shipped file."""
    from indexer.offline import OfflineEncoders
    from trainer.classes import class_table

    encode = OfflineEncoders().sentence_vectors
    classes = class_table()["classes"]
    out = ClassEmbeddings.build(encode, classes)
    words = shipped_words()
    for i in range(0, len(words), 1024):
        out.words.update(zip(words[i:i + 1024], out.conse(encode, words[i:i + 1024])))
    path = path or SHIPPED
    out.save(path, probes=encode(random_strings(NULL_PROBES)), classes=classes)
    return path


class ConceptReader:
    """Reads queries into class weights; shared by threads. `encode` (a sentence encoder) enables ConSE."""

    def __init__(self, encode: Encode | None = None, encoder_key: str = "", classes: int | None = None):
        from trainer.classes import class_table

        table = class_table()
        self.classes = table["classes"]
        if classes is not None and classes != len(self.classes):
            raise ValueError(f"the store's classifier has {classes} classes; the class table describes "
                             f"{len(self.classes)} ImageNet classes")
        self.lexicon: dict[str, list[int]] = table["lexicon"]
        self.describing = frozenset(table.get("describing", ()))
        self._encode, self._key = encode, encoder_key
        self._embeddings: ClassEmbeddings | None = None
        self._lock = threading.Lock()
        self._word_cache: dict[str, tuple] = {}
        self._query_cache: dict[str, ConceptQuery] = {}

    def label(self, c: int) -> str:
        return self.classes[c]["label"]

    def embeddings(self) -> ClassEmbeddings | None:
        """The class embeddings (built or read from the cache on first use); None without a sentence encoder."""
        if self._encode is None:
            return None
        with self._lock:
            if self._embeddings is None:
                self._embeddings = ClassEmbeddings.cached(self._encode, self.classes, self._key)
            return self._embeddings

    def warm(self) -> None:
        """Load what reading needs on first use: the class embeddings and, for the words whose readings do not
        ship, WordNet (over a second, which would otherwise fall on the first query holding such a word)."""
        if self.embeddings() is not None:
            from trainer.senses import wordnet

            wordnet()
            word_texts("video")      # and the first parse behind a word's senses

    def read(self, text: str) -> ConceptQuery:
        """The concept weights of a query and the words that reached them (remembered for repeated queries)."""
        cached = self._query_cache.get(text)
        if cached is None:
            cached = self._read(text)
            with self._lock:
                if len(self._query_cache) >= QUERY_CACHE:
                    self._query_cache.pop(next(iter(self._query_cache)))
                self._query_cache[text] = cached
        return cached

    def _read(self, text: str) -> ConceptQuery:
        words = query_words(text)
        weights: dict[int, float] = {}
        matches: list[ConceptMatch] = []
        unreached: list[str] = []
        i = 0
        while i < len(words):
            n, classes = self._wordnet_at(words, i)
            if classes:
                for c in classes:
                    weights[c] = 1.0
                matches.append(ConceptMatch(" ".join(words[i:i + n]), tuple(self.label(c) for c in classes), WORDNET))
            elif words[i].replace("-", "").isalpha() and words[i] not in self.describing:
                unreached.append(words[i])
            i += n
        similar = self._similar(list(dict.fromkeys(unreached)))
        for word, reached in similar.items():
            for c, w in reached:
                weights[c] = max(weights.get(c, 0.0), w)
            if reached:
                matches.append(ConceptMatch(word, tuple(self.label(c) for c, _ in reached), SIMILARITY))
        return ConceptQuery(weights, tuple(matches))

    def _wordnet_at(self, words: list[str], i: int) -> tuple[int, list[int]]:
        """(words used, classes reached) by the longest collocation starting at word i; (1, []) for none."""
        for n in range(min(MAX_NGRAM, len(words) - i), 0, -1):
            head, last = words[i:i + n - 1], words[i + n - 1]
            for base in self._bases(last):
                phrase = " ".join(head + [base])
                if phrase in self.lexicon:
                    return n, self.lexicon[phrase]
        return 1, []

    def _bases(self, word: str) -> list[str]:
        """The word, then its noun base forms (plural endings stripped) that name something in the table."""
        from trainer.classes import NOUN_ENDINGS, class_table

        out = [word]
        out += class_table()["plurals"].get(word, [])
        out += [word[:-len(old)] + new for old, new in NOUN_ENDINGS if word.endswith(old) and len(word) > len(old) + 1]
        return list(dict.fromkeys(out))

    def _similar(self, words: list[str]) -> dict[str, list[tuple[int, float]]]:
        """ConSE: for each word, (class, weight) of the classes it is closer to than chance, strongest first.

        A word whose reading ships with the encoder's class embeddings costs a lookup; the texts of the other
        words not yet cached go to the sentence encoder in one call: a query's new words cost one encoder pass,
        not one each."""
        out = {w: list(self._word_cache[w]) for w in words if w in self._word_cache}
        new = [w for w in words if w not in out]
        emb = self.embeddings() if new else None
        if emb is None:
            return {w: out.get(w, []) for w in words}
        found = {w: emb.known(w) for w in new}
        unknown = [w for w in new if found[w] is None]
        found.update(zip(unknown, emb.conse(self._encode, unknown) if unknown else []))
        with self._lock:
            if len(self._word_cache) + len(new) > 4096:
                self._word_cache.clear()
            self._word_cache.update(found)
        out.update((w, list(found[w])) for w in new)
        return {w: out[w] for w in words}


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python -m search.concepts --write   (writes " + str(SHIPPED) + ")")
    print(write_shipped())
