"""First stage of indexing: turn PATH arguments (files, directories, .jsonl manifests) into video files to index."""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

MANIFEST_EXTENSIONS = (".jsonl",)


@dataclass
class Found:
    """A video file to index and the manifest captions that name it."""

    path: str  # absolute, symlinks not resolved (the path the user knows)
    captions: list = field(default_factory=list)  # trainer.captions.Caption


@dataclass
class Discovery:
    """What the PATH arguments hold: video files, and video-like entries that cannot be used, with why."""

    files: list[Found] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): recorded as failed
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): directories not walked


def _extensions(extensions: Iterable[str] | None) -> tuple[str, ...]:
    if extensions is None:
        from trainer.media import VIDEO_EXTENSIONS

        extensions = VIDEO_EXTENSIONS
    return tuple(e.lower() for e in extensions)


def _stat_reason(path: str) -> str | None:
    """Why `path` cannot be indexed as a file (following symlinks), or None if it is a regular file."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop"
        if e.errno == errno.ENOENT and os.path.islink(path):
            return "broken symlink (its target does not exist)"
        if e.errno == errno.ENOENT:
            return "file not found"
        return f"cannot stat file ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return None


class _Walker:
    """Collects files in argument order, each once, walking directories without following a loop twice."""

    def __init__(self, extensions: tuple[str, ...]):
        self.extensions = extensions
        self.out = Discovery()
        self.index: dict[str, Found] = {}
        self.seen_dirs: set[tuple[int, int]] = set()

    def add_file(self, path: str, captions=()) -> None:
        reason = _stat_reason(path)
        if reason is not None:
            if path not in {p for p, _ in self.out.problems}:
                self.out.problems.append((path, reason))
            return
        found = self.index.get(path)
        if found is None:
            found = self.index[path] = Found(path)
            self.out.files.append(found)
        found.captions.extend(captions)

    def walk(self, directory: str) -> None:
        try:
            st = os.stat(directory)
        except OSError as e:
            self.out.notes.append((directory, f"cannot open directory ({e.strerror})"))
            return
        if (st.st_dev, st.st_ino) in self.seen_dirs:
            self.out.notes.append((directory, "symlink loop (directory already walked)"))
            return
        self.seen_dirs.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            self.out.notes.append((directory, f"cannot read directory ({e.strerror})"))
            return
        for entry in entries:
            if entry.name.startswith("."):  # hidden files and folders (.git, ._AppleDouble, .thumbnails)
                continue
            self._entry(entry)

    def _entry(self, entry: os.DirEntry) -> None:
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            self.walk(entry.path)
        elif os.path.splitext(entry.name)[1].lower() in self.extensions:
            self.add_file(entry.path)
        elif entry.is_symlink() and _stat_reason(entry.path) == "symlink loop":
            self.out.notes.append((entry.path, "symlink loop"))


def discover(paths: Iterable[str | os.PathLike], extensions: Iterable[str] | None = None) -> Discovery:
    """Video files named by `paths`: files as given, directories walked recursively for video extensions,
    `.jsonl` manifests read for their videos and captions. Hidden entries inside directories are skipped.

    Raises trainer.captions.CaptionError for a manifest that cannot be read.
    """
    walker = _Walker(_extensions(extensions))
    for raw in paths:
        path = os.path.abspath(os.fspath(raw))
        if path.lower().endswith(MANIFEST_EXTENSIONS) and os.path.isfile(path):
            _add_manifest(walker, path)
        elif os.path.isdir(path):
            walker.walk(path)
        else:
            walker.add_file(path)
    return walker.out


def _add_manifest(walker: _Walker, manifest: str) -> None:
    from trainer.captions import read_manifest

    by_video: dict[str, list] = {}
    for caption in read_manifest(manifest):
        by_video.setdefault(os.path.abspath(caption.video), []).append(caption)
    for video, captions in by_video.items():
        walker.add_file(video, captions)
