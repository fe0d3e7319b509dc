"""Pure numpy drawing for :mod:`falv.data.synth`: tracks, shapes, textures, backgrounds.

Everything here is a function of plain, JSON-serialisable data (dicts of numbers
and strings), so a worker process can render a video from its manifest entry and
the manifest alone says how every pixel was made.

Conventions: positions are fractions of the frame (``x`` of the width, ``y`` of
the height, ``y`` grows downwards as in images); radii are fractions of the
shorter side; angles are radians, and a positive angle turns an object
**clockwise on screen** (because ``y`` points down).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross")
TEXTURES = ("solid", "striped", "checkered")
BACKGROUNDS = ("plain", "gradient", "texture")
#: Colour families and their hue in degrees (HSV).
COLOURS = {"red": 0.0, "yellow": 60.0, "green": 120.0, "cyan": 180.0, "blue": 240.0, "magenta": 300.0}

# Texture frequency in cycles per object radius (local coordinates).
_TEXTURE_FREQ = 1.25
# Outward edge normals of an upward-pointing equilateral triangle inscribed in the unit circle.
_TRIANGLE_NORMALS = [(math.cos(a), math.sin(a)) for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)]


# ----------------------------------------------------------------------------- colours


def hsv_to_rgb(h: float, s: float, v: float) -> list[float]:
    """HSV (hue in degrees, s and v in [0, 1]) to RGB in [0, 255]."""
    h = (h % 360.0) / 60.0
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    m = v - c
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    return [round((r + m) * 255, 2), round((g + m) * 255, 2), round((b + m) * 255, 2)]


def rgb_to_yuv420p(frames: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 RGB to ``(T, H * 3 // 2, W)`` uint8 planar yuv420p.

    BT.601 limited range, the matrix decoders assume for untagged SD H.264
    (and swscale's default when PyAV converts back to RGB).
    """
    t, h, w, _ = frames.shape
    rgb = frames.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16.0 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    cb = 128.0 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    cr = 128.0 + 0.439216 * r - 0.367789 * g - 0.071427 * b
    # 2x2 chroma subsampling by averaging
    cb = cb.reshape(t, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    cr = cr.reshape(t, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    out = np.empty((t, h * 3 // 2, w), dtype=np.uint8)
    out[:, :h] = np.clip(np.rint(y), 0, 255)
    # yuv420p planes as PyAV lays them out in one (H * 3/2, W) array: U then V,
    # each (H/2, W/2) stored as H/4 rows of width W.
    out[:, h : h + h // 4] = np.clip(np.rint(cb), 0, 255).reshape(t, h // 4, w)
    out[:, h + h // 4 :] = np.clip(np.rint(cr), 0, 255).reshape(t, h // 4, w)
    return out


# ----------------------------------------------------------------------------- tracks


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold ``x`` into ``[lo, hi]`` by mirror reflection (a ball bouncing off walls)."""
    span = hi - lo
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def track(motion: Mapping[str, Any], n: int, fps: float) -> dict[str, np.ndarray]:
    """Per-frame state of one object over its ``n`` frames.

    Returns ``cx, cy`` (frame fractions), ``scale`` (multiplies the radius),
    ``angle`` (radians, clockwise) and ``alpha`` (opacity), each ``(n,)`` float64.
    ``u`` runs from 0 to 1 over the object's frames; ``motion["reverse"]`` plays
    the track backwards (the arrays reversed), which is how every temporal class
    is made from its partner.
    """
    kind = motion["kind"]
    u = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(n)
    seconds = np.arange(n) / fps
    ones = np.ones(n)
    cx = ones * motion.get("x", 0.5)
    cy = ones * motion.get("y", 0.5)
    scale = ones.copy()
    angle = ones * motion.get("angle", 0.0)
    alpha = ones.copy()
    if kind == "static":
        pass
    elif kind == "linear":  # move_* (p = 1) and speed_up/slow_down (p > 1)
        s = u ** motion["power"]
        cx = motion["x"] + (motion["x_end"] - motion["x"]) * s
        cy = motion["y"] + (motion["y_end"] - motion["y"]) * s
    elif kind == "rotate":
        angle = motion["angle"] + motion["turn"] * u
    elif kind == "scale":  # geometric growth: apparent size of an object approaching at constant speed
        scale = motion["scale"] * (motion["scale_end"] / motion["scale"]) ** u
    elif kind == "fade":
        t0, t1 = motion["fade_start"], motion["fade_end"]
        alpha = np.clip((u - t0) / max(t1 - t0, 1e-6), 0.0, 1.0)
    elif kind == "pulse":  # grow_then_shrink: one cycle of size change, log-size a sine
        scale = np.exp(motion["amp"] * np.sin(2 * math.pi * u))
    elif kind == "blink":  # a_then_b markers: shown over [on, off] of the clip, symmetric fades
        alpha = np.clip(np.minimum(u - motion["on"], motion["off"] - u) / motion["fade"], 0.0, 1.0)
    elif kind == "wobble":  # irrelevant, non-monotone motion of appearance classes
        w = 2 * math.pi * motion["freq"] * seconds
        cx = motion["x"] + motion["amp_x"] * np.sin(w + motion["phase_x"])
        cy = motion["y"] + motion["amp_y"] * np.sin(w + motion["phase_y"])
        angle = motion["angle"] + motion["amp_angle"] * np.sin(w + motion["phase_angle"])
    elif kind == "bounce":  # distractors: constant velocity, reflected at the frame border
        cx = _reflect(motion["x"] + motion["vx"] * seconds, 0.05, 0.95)
        cy = _reflect(motion["y"] + motion["vy"] * seconds, 0.05, 0.95)
        angle = motion["angle"] + motion["spin"] * seconds
    else:
        raise ValueError(f"unknown motion kind {kind!r}")
    state = {"cx": cx, "cy": cy, "scale": scale, "angle": angle, "alpha": alpha}
    if motion.get("reverse", False):
        # reverse the computed arrays (not u) so the partner's states are bit-identical, mirrored
        state = {k: v[::-1].copy() for k, v in state.items()}
    return state


# ----------------------------------------------------------------------------- shapes


def _signed_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance (positive inside) in units of the radius."""
    if shape == "circle":
        return 1.0 - np.sqrt(u * u + v * v)
    if shape == "square":
        return 0.8 - np.maximum(np.abs(u), np.abs(v))
    if shape == "triangle":
        d = np.maximum.reduce([u * nx + v * ny for nx, ny in _TRIANGLE_NORMALS])
        return 0.5 - d
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        bar1 = np.minimum(0.95 - au, 0.3 - av)
        bar2 = np.minimum(0.3 - au, 0.95 - av)
        return np.maximum(bar1, bar2)
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str, u: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """1 where the secondary colour shows, 0 elsewhere; None for a solid object."""
    if texture == "solid":
        return None
    k = _TEXTURE_FREQ
    if texture == "striped":
        return (np.floor(u * 2 * k) % 2).astype(np.float32)
    if texture == "checkered":
        return ((np.floor(u * 2 * k) + np.floor(v * 2 * k)) % 2).astype(np.float32)
    raise ValueError(f"unknown texture {texture!r}")


def draw_objects(
    canvas: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    obj: Mapping[str, Any],
    state: Mapping[str, np.ndarray],
    frames: np.ndarray,
) -> None:
    """Alpha-composite one object onto ``canvas[frames]`` in place.

    ``canvas`` is ``(T, H, W, 3)`` float32, ``xs``/``ys`` are pixel-centre
    coordinates ``(T, 1, W)``/``(T, H, 1)`` already shifted by camera jitter,
    ``state`` holds per-frame arrays aligned with ``frames``.
    """
    if len(frames) == 0:
        return
    h, w = canvas.shape[1:3]
    side = min(h, w)
    # only the box the object can touch in these frames (coverage is exactly 0 outside:
    # every shape lies within 1.14 radii of its centre; 2 px for the soft edge and
    # pixel centres, plus the camera jitter, the offset of xs/ys from i + 0.5)
    extent = obj["radius"] * side * state["scale"] * 1.15 + 2.0
    jx = float(np.abs(xs[frames, 0, 0] - 0.5).max())
    jy = float(np.abs(ys[frames, 0, 0] - 0.5).max())
    x0 = int(max(0, np.floor((state["cx"] * w - extent).min() - jx)))
    x1 = int(min(w, np.ceil((state["cx"] * w + extent).max() + jx) + 1))
    y0 = int(max(0, np.floor((state["cy"] * h - extent).min() - jy)))
    y1 = int(min(h, np.ceil((state["cy"] * h + extent).max() + jy) + 1))
    if x0 >= x1 or y0 >= y1:
        return
    xs, ys = xs[frames, :, x0:x1], ys[frames, y0:y1, :]
    radius = (obj["radius"] * side * state["scale"]).astype(np.float32)[:, None, None]  # (n, 1, 1)
    dx = xs - (state["cx"] * w).astype(np.float32)[:, None, None]
    dy = ys - (state["cy"] * h).astype(np.float32)[:, None, None]
    # per-frame scalars through math (numpy's SIMD sin/cos may differ in the last bit
    # depending on an element's position, which would break exact time reversal)
    cos = np.array([math.cos(a) for a in state["angle"]], dtype=np.float32)[:, None, None]
    sin = np.array([math.sin(a) for a in state["angle"]], dtype=np.float32)[:, None, None]
    # rotate pixel offsets by -angle into the object's frame, in units of its radius
    u = (dx * cos + dy * sin) / radius
    v = (-dx * sin + dy * cos) / radius
    # coverage with a one-pixel soft edge (cheap anti-aliasing)
    cover = np.clip(_signed_distance(obj["shape"], u, v) * radius + 0.5, 0.0, 1.0)
    cover *= state["alpha"].astype(np.float32)[:, None, None]
    colour = np.asarray(obj["colour"], dtype=np.float32)
    pattern = _texture(obj["texture"], u, v)
    if pattern is None:
        paint = np.broadcast_to(colour, cover.shape + (3,))
    else:
        colour2 = np.asarray(obj["colour2"], dtype=np.float32)
        paint = colour + pattern[..., None] * (colour2 - colour)
    a = cover[..., None]
    region = canvas[frames, y0:y1, x0:x1]
    canvas[frames, y0:y1, x0:x1] = region * (1.0 - a) + paint * a


# ----------------------------------------------------------------------------- backgrounds


def draw_background(background: Mapping[str, Any], xs: np.ndarray, ys: np.ndarray, h: int, w: int) -> np.ndarray:
    """``(T, H, W, 3)`` float32 background; ``xs``/``ys`` are jittered pixel coordinates."""
    c0 = np.asarray(background["colour"], dtype=np.float32)
    kind = background["kind"]
    t = xs.shape[0]
    if kind == "plain":
        return np.broadcast_to(c0, (t, h, w, 3)).copy()
    c1 = np.asarray(background["colour2"], dtype=np.float32)
    x = xs / w - 0.5
    y = ys / h - 0.5
    if kind == "gradient":
        a = background["direction"]
        mix = np.clip(x * math.cos(a) + y * math.sin(a) + 0.5, 0.0, 1.0)
    elif kind == "texture":  # a few low-frequency plane waves
        mix = np.zeros((t, h, w), dtype=np.float32)
        for fx, fy, phase in background["waves"]:
            mix = mix + np.sin(2 * math.pi * (fx * x + fy * y) + phase)
        mix = 0.5 + 0.5 * mix / len(background["waves"])
    else:
        raise ValueError(f"unknown background {kind!r}")
    mix = mix.astype(np.float32)[..., None]
    return c0 + mix * (c1 - c0)


# ----------------------------------------------------------------------------- scenes


def render_frames(scene: Mapping[str, Any], start: int = 0, stop: int | None = None) -> np.ndarray:
    """Render frames ``[start, stop)`` of a scene as ``(n, H, W, 3)`` uint8 RGB.

    A scene is ``{"width", "height", "fps", "num_frames", "background",
    "objects": [...], "noise": {"std", "jitter", "seed"}}``; each object has an
    appearance (``shape, texture, colour, colour2, radius``), a ``motion`` and
    the ``[first, last)`` frames where it exists (``frames``). Objects are drawn
    in list order (distractors first). Pixel noise and jitter of frame ``i`` come
    from a generator seeded by ``(noise seed, i)``, so any chunking of
    ``[start, stop)`` gives the same pixels.
    """
    h, w, fps, total = scene["height"], scene["width"], scene["fps"], scene["num_frames"]
    stop = total if stop is None else min(stop, total)
    n = stop - start
    noise = scene["noise"]
    rngs = [np.random.default_rng([noise["seed"], i]) for i in range(start, stop)]
    jitter = np.array([r.uniform(-1.0, 1.0, 2) for r in rngs], dtype=np.float32).reshape(n, 2) * noise["jitter"]
    # pixel-centre coordinates, shifted by the camera jitter of each frame
    xs = (np.arange(w, dtype=np.float32) + 0.5)[None, None, :] + jitter[:, 0, None, None]  # (n, 1, W)
    ys = (np.arange(h, dtype=np.float32) + 0.5)[None, :, None] + jitter[:, 1, None, None]  # (n, H, 1)
    canvas = draw_background(scene["background"], xs, ys, h, w)
    for obj in scene["objects"]:
        first, last = obj["frames"]
        lo, hi = max(first, start), min(last, stop)
        if lo >= hi:
            continue
        state = track(obj["motion"], last - first, fps)
        sl = slice(lo - first, hi - first)
        draw_objects(canvas, xs, ys, obj, {k: a[sl] for k, a in state.items()}, np.arange(lo - start, hi - start))
    if noise["std"] > 0:
        canvas += np.stack([r.standard_normal((h, w, 3), dtype=np.float32) for r in rngs]) * noise["std"]
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def object_tracks(scene: Mapping[str, Any], role: str | Sequence[str] = "action") -> list[dict[str, np.ndarray]]:
    """The per-frame states of the scene's objects with the given role(s) (for analysis and tests)."""
    roles = (role,) if isinstance(role, str) else tuple(role)
    out = []
    for obj in scene["objects"]:
        if obj.get("role") in roles:
            first, last = obj["frames"]
            out.append(track(obj["motion"], last - first, scene["fps"]))
    return out
