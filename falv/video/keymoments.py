"""Key-moment frame selection: a clip's frames placed where the picture changes.

The FAL web page promises "an intelligent frame selection algorithm that captures key
moments while maintaining temporal coherence". falv's version is plain and measured
(docs/results.md, "Key-moment sampling"); uniform sampling stays the default.

A window is decoded at ``candidates_per_frame`` times the clip's frame count (evenly
spaced candidates, at most one per source frame: :func:`candidate_timestamps`), and :func:`select_key_frames` keeps
``num_frames`` of them:

1. **change** at each candidate: the mean absolute difference of its small grey picture
   from its neighbours' (:func:`change_energy`). A shot cut or fast motion is a large change.
2. **density**: a mix of uniform and change, ``(1 - share) / M + share * change / sum``
   over the ``M`` candidates (``share`` = :data:`DEFAULT_CHANGE_SHARE`).
3. **frames at equal steps of the density's running sum**: frame ``k`` is the candidate
   where the running sum crosses ``(k + 0.5) / T``, so frames crowd where the picture
   changes and thin out where it stays still.

What this keeps, by construction (and tested as properties): frames in time order,
never the same candidate twice, the uniform choice (each segment's centre) when nothing
changes and the window has ``candidates_per_frame`` candidates per frame, and bounded
spacing: every candidate keeps at least ``(1 - share) / M`` of the density,
so no two consecutive frames lie more than about ``1 / (1 - share)`` times the uniform
spacing apart (2x for the default share of 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Candidates decoded per clip frame (``falv label --frame-selection key-moments``); odd, so that
#: each uniform segment's centre (where uniform sampling puts its frame) is a candidate.
DEFAULT_CANDIDATES_PER_FRAME = 5
#: Share of the density that follows the picture's change (the rest is uniform).
DEFAULT_CHANGE_SHARE = 0.5
#: Side of the grey thumbnails whose differences measure change.
THUMBNAIL_SIDE = 32


def candidate_timestamps(start: float, end: float, num_frames: int, fps: float | None,
                         per_frame: int = DEFAULT_CANDIDATES_PER_FRAME) -> list[float]:
    """Evenly spaced candidate times in ``[start, end)``: ``per_frame * num_frames`` of them, or
    one per source frame when the window holds fewer frames (at least ``num_frames``)."""
    if not end > start:
        raise ValueError(f"window [{start}, {end}] has no length")
    if num_frames < 1 or per_frame < 1:
        raise ValueError("num_frames and per_frame must be >= 1")
    count = per_frame * num_frames
    if fps is not None and math.isfinite(fps) and fps > 0:
        count = min(count, max(num_frames, int(math.floor((end - start) * fps))))
    step = (end - start) / count
    return [start + (i + 0.5) * step for i in range(count)]


def thumbnails(frames: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """(M, H, W, 3) uint8 frames -> (M, h, w) float32 grey pictures about ``side`` pixels across
    (block means: cheap, and a little blur makes noise count less than motion)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (M, H, W, 3), got {frames.shape}")
    m, h, w, _ = frames.shape
    grey = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    by, bx = max(1, h // side), max(1, w // side)
    hh, ww = (h // by) * by, (w // bx) * bx
    return grey[:, :hh, :ww].reshape(m, hh // by, by, ww // bx, bx).mean(axis=(2, 4))


def change_energy(pictures: np.ndarray) -> np.ndarray:
    """Change at each of M pictures (M,): the mean absolute difference from each neighbour,
    averaged over its two sides (one side at the ends), so a cut between pictures i and i + 1
    weighs on both (0 for a single picture)."""
    m = len(pictures)
    if m < 2:
        return np.zeros(m, dtype=np.float64)
    diffs = np.abs(np.diff(pictures.astype(np.float64), axis=0)).reshape(m - 1, -1).mean(axis=1)
    before = np.concatenate([[diffs[0]], diffs])  # change to the previous picture (the first: to the next)
    after = np.concatenate([diffs, [diffs[-1]]])
    return (before + after) / 2


def select_key_frames(energy: Sequence[float], num_frames: int,
                      change_share: float = DEFAULT_CHANGE_SHARE) -> list[int]:
    """Indices (increasing, distinct) of ``num_frames`` of ``len(energy)`` candidates, placed by
    the mixed density of the module docstring. Fewer candidates than frames: every candidate,
    the last repeated to fill (as uniform sampling repeats frames of a short video)."""
    e = np.asarray(energy, dtype=np.float64)
    m = len(e)
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    if not 0.0 <= change_share < 1.0:
        raise ValueError(f"change_share must be in [0, 1), got {change_share}")
    if m == 0:
        raise ValueError("no candidates to select from")
    if m <= num_frames:
        return list(range(m)) + [m - 1] * (num_frames - m)
    e = np.where(np.isfinite(e) & (e > 0), e, 0.0)
    total = e.sum()
    change = e / total if total > 0 else np.full(m, 1.0 / m)
    density = (1.0 - change_share) / m + change_share * change
    upper = np.cumsum(density)
    upper[-1] = 1.0
    targets = (np.arange(num_frames) + 0.5) / num_frames
    picks = np.searchsorted(upper, targets, side="left").clip(0, m - 1)
    # distinct and increasing: push each pick past the previous one, then pull back from the
    # end so that every later frame still has a candidate of its own
    out = []
    for k, p in enumerate(picks):
        p = max(int(p), out[-1] + 1 if out else 0)
        out.append(min(p, m - (num_frames - k)))
    for k in range(num_frames - 2, -1, -1):
        out[k] = min(out[k], out[k + 1] - 1)
    return out


def key_frames(frames: np.ndarray, num_frames: int, change_share: float = DEFAULT_CHANGE_SHARE) -> list[int]:
    """:func:`select_key_frames` on the change of decoded candidate ``frames`` (M, H, W, 3)."""
    return select_key_frames(change_energy(thumbnails(frames)), num_frames, change_share)
