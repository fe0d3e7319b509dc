"""Turn what the user typed into a list of video paths.

Inputs may be files, folders (searched recursively), glob patterns, or a text /
CSV list of paths (``.txt``, ``.csv``, ``.tsv``, ``.lst``: the first column of
each row; relative paths are taken from the list's folder). Anything that does
not exist is reported, never fatal; whether a file is really a video is decided
later by the decoder, which turns failures into error records.
"""

from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

#: Extensions picked up when a folder is searched.
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg",
    ".wmv", ".flv", ".3gp", ".ogv", ".gif",
})
LIST_EXTENSIONS = frozenset({".txt", ".csv", ".tsv", ".lst"})


@dataclass
class Inputs:
    """Video paths in a stable order (duplicates removed) and what could not be used."""

    paths: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str, seen: set[str]) -> None:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            self.paths.append(path)


def _read_list(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8-sig")
    delimiter = "\t" if path.suffix == ".tsv" else ","
    rows = []
    for row in csv.reader(text.splitlines(), delimiter=delimiter):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        first = row[0].strip()
        if path.suffix == ".txt" and " " in first and not (path.parent / first).exists():
            first = first.split()[0]  # "path label" lines
        rows.append(first)
    if rows and rows[0].lower() in {"path", "video", "file", "filename"}:
        rows = rows[1:]  # header
    return [r if os.path.isabs(r) else str(path.parent / r) for r in rows]


def _walk(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                found.append(os.path.join(root, name))
    return found


def collect_inputs(inputs: list[str] | tuple[str, ...] | str) -> Inputs:
    """Expand files, folders, globs and list files into video paths (see module doc)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [str(inputs)]
    out, seen = Inputs(), set()
    for item in inputs:
        item = str(item)
        path = Path(item).expanduser()
        if path.is_dir() and path.suffix.lower() not in VIDEO_EXTENSIONS:
            videos = _walk(path)
            if not videos:
                out.problems.append((item, "folder holds no video files"))
            for video in videos:
                out.add(video, seen)
        elif path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
            try:
                listed = _read_list(path)
            except (OSError, UnicodeDecodeError, csv.Error) as exc:
                out.problems.append((item, f"cannot read the list: {exc}"))
                continue
            for video in listed:
                out.add(video, seen)  # missing entries become error records later
        elif path.exists():
            out.add(str(path), seen)  # a file, or a directory named like a video: the decoder says why
        elif glob.has_magic(item):
            matches = sorted(glob.glob(os.path.expanduser(item), recursive=True))
            files = [m for m in matches if os.path.isfile(m)]
            if not files:
                out.problems.append((item, "pattern matches no file"))
            for video in files:
                out.add(video, seen)
        else:
            out.add(item, seen)  # reported as "not found" by the decoder, as a record
    return out
