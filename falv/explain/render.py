"""Heat-map overlays of an :class:`~falv.explain.rollout.Explanation` on its frames.

The relevance map (T, Hp, Wp) is scaled to [0, 1] with one factor for the whole
clip (by its maximum, or min-max; frames stay comparable), upsampled bilinearly to the patch area of the
frame, coloured with the ``jet`` colormap and alpha-blended on the frame. Written
as a PNG strip (frames on top, overlays below, the top label in a title bar), an
animated GIF (Pillow) and an MP4 (PyAV, H.264).

Pillow comes with the ``plots`` extra (``pip install "falv[plots]"``); it is
imported only when something is drawn.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from falv.explain import ExplainError

if TYPE_CHECKING:  # pragma: no cover
    from falv.explain.rollout import Explanation

FORMATS = ("png", "gif", "mp4")
#: Frames smaller than this (short side, pixels) are enlarged for display.
MIN_DISPLAY_SIDE = 160
_TITLE_HEIGHT = 24
_CAPTION_HEIGHT = 16
_GAP = 4


def _pil() -> Any:
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:  # pragma: no cover - depends on the environment
        raise ExplainError('drawing heat maps needs Pillow: pip install "falv[plots]"') from None
    return Image, ImageDraw, ImageFont


def parse_formats(text: str | Iterable[str]) -> list[str]:
    """``"png,gif"`` or ``["png", "gif"]`` -> validated, de-duplicated names."""
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in str(t).split(",")]
    names = [p.strip().lower() for p in items if p.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ExplainError(f"unknown format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


# -- pure array functions ----------------------------------------------------------------------


def jet(values: np.ndarray) -> np.ndarray:
    """The classic ``jet`` colormap: values in [0, 1] -> uint8 RGB (..., 3), blue to red."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # r, g, b peaks at 3/4, 1/2, 1/4
    rgb = np.clip(1.5 - np.abs(4.0 * (v - centres)), 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


SCALES = ("max", "minmax")


def normalize_relevance(relevance: np.ndarray, scale: str = "max") -> np.ndarray:
    """Scale a map to [0, 1] with one factor for the whole clip (frames stay comparable).

    ``"max"`` divides by the largest value (as the reference rollout code does), so a
    flat map stays flat; ``"minmax"`` stretches the smallest to 0 and the largest to 1,
    which shows small differences but also magnifies noise. A zero map stays zero.
    """
    if scale not in SCALES:
        raise ExplainError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    r = np.asarray(relevance, dtype=np.float32)
    r = np.where(np.isfinite(r), np.maximum(r, 0.0), 0.0)
    if r.size == 0:
        return r
    lo = float(r.min()) if scale == "minmax" else 0.0
    hi = float(r.max())
    if hi - lo <= 1e-12:
        return np.zeros_like(r) if hi <= 1e-12 else np.ones_like(r)
    return (r - lo) / (hi - lo)


def upsample(maps: np.ndarray, size: tuple[int, int], patch_size: int | None = None) -> np.ndarray:
    """(T, Hp, Wp) -> (T, H, W) bilinear. With ``patch_size`` the map covers the
    ``Hp*P x Wp*P`` patch area only (the model drops a remainder), the rest is 0."""
    import torch
    import torch.nn.functional as F

    h, w = size
    t, hp, wp = maps.shape
    ah, aw = (min(h, hp * patch_size), min(w, wp * patch_size)) if patch_size else (h, w)
    x = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).unsqueeze(1)
    up = F.interpolate(x, size=(ah, aw), mode="bilinear", align_corners=False).squeeze(1).numpy()
    if (ah, aw) == (h, w):
        return up
    out = np.zeros((t, h, w), dtype=np.float32)
    out[:, :ah, :aw] = up
    return out


def overlay_frames(
    frames: np.ndarray,
    relevance: np.ndarray,
    *,
    alpha: float = 0.5,
    patch_size: int | None = None,
    scale: str = "max",
) -> np.ndarray:
    """Blend the clip-normalised (:func:`normalize_relevance`), upsampled, ``jet``-coloured map on ``frames``.

    ``frames``: (T, H, W, 3) uint8; ``relevance``: (T, Hp, Wp). Returns (T, H, W, 3) uint8:
    ``(1 - alpha) * frame + alpha * colour``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ExplainError(f"frames must be (T, H, W, 3), got {frames.shape}")
    if relevance.ndim != 3 or relevance.shape[0] != frames.shape[0]:
        raise ExplainError(f"relevance must be (T, Hp, Wp) with T = {frames.shape[0]}, got {relevance.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ExplainError(f"alpha must be in [0, 1], got {alpha}")
    heat = jet(upsample(normalize_relevance(relevance, scale), frames.shape[1:3], patch_size)).astype(np.float32)
    out = (1.0 - alpha) * frames.astype(np.float32) + alpha * heat
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _display_scale(height: int, width: int, min_side: int = MIN_DISPLAY_SIDE) -> int:
    """Integer enlargement so the short side reaches ``min_side`` (1 for frames big enough)."""
    short = max(1, min(height, width))
    return max(1, -(-min_side // short))


def _enlarge(images: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return images
    return images.repeat(factor, axis=1).repeat(factor, axis=2)  # crisp patches: no smoothing


# -- pictures ----------------------------------------------------------------------------------


def _font(size: int) -> Any:
    _, _, ImageFont = _pil()
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """``text`` shortened with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _frame_captions(explanation: Explanation) -> list[str]:
    times = explanation.timestamps
    t = explanation.frames.shape[0]
    if times is not None and len(times) == t:
        return [f"{s:.2f} s" for s in times]
    return [f"frame {i}" for i in range(t)]


def _display(explanation: Explanation, alpha: float, scale: str) -> tuple[np.ndarray, np.ndarray]:
    """Frames enlarged for display (small ones only) and their overlays drawn at that size."""
    frames = explanation.frames
    factor = _display_scale(*frames.shape[1:3])
    frames = _enlarge(frames, factor)
    overlays = overlay_frames(frames, explanation.relevance, alpha=alpha,
                              patch_size=explanation.patch_size * factor, scale=scale)
    return frames, overlays


def strip_image(explanation: Explanation, *, alpha: float = 0.5, scale: str = "max") -> Any:
    """A PIL image: a title bar, the T frames side by side, their overlays below, captions."""
    Image, ImageDraw, _ = _pil()
    frames, overlays = _display(explanation, alpha, scale)
    t, h, w, _ = frames.shape
    width = t * w + (t + 1) * _GAP
    height = _TITLE_HEIGHT + 2 * h + 3 * _GAP + _CAPTION_HEIGHT
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(14)
    draw.text((_GAP, 4), _fit(draw, explanation.title, font, width - 2 * _GAP), fill=(0, 0, 0), font=font)
    small = _font(11)
    y0 = _TITLE_HEIGHT
    for i, caption in enumerate(_frame_captions(explanation)):
        x = _GAP + i * (w + _GAP)
        canvas.paste(Image.fromarray(frames[i]), (x, y0))
        canvas.paste(Image.fromarray(overlays[i]), (x, y0 + h + _GAP))
        draw.text((x, y0 + 2 * h + 2 * _GAP), _fit(draw, caption, small, w), fill=(60, 60, 60), font=small)
    return canvas


def _titled_frames(explanation: Explanation, alpha: float, scale: str) -> list[np.ndarray]:
    """Overlay frames with the title and the frame's time drawn on a bar above (for GIF/MP4)."""
    Image, ImageDraw, _ = _pil()
    _, overlays = _display(explanation, alpha, scale)
    _, h, w, _ = overlays.shape
    h_out = h + _TITLE_HEIGHT
    h_out, w_out = h_out + h_out % 2, w + w % 2  # even sizes for H.264 4:2:0
    font = _font(12)
    top = explanation.top
    label = f"{top[0]} ({top[1]:.0%})" if top else "no label"
    out = []
    for image, caption in zip(overlays, _frame_captions(explanation)):
        canvas = Image.new("RGB", (w_out, h_out), (255, 255, 255))
        canvas.paste(Image.fromarray(image), (0, _TITLE_HEIGHT))
        draw = ImageDraw.Draw(canvas)
        draw.text((3, 5), _fit(draw, f"{caption}  {label}", font, w_out - 6), fill=(0, 0, 0), font=font)
        out.append(np.asarray(canvas))
    return out


def render_strip(
    explanation: Explanation, path: str | os.PathLike[str], *, alpha: float = 0.5, scale: str = "max"
) -> Path:
    """Write the PNG strip (frames, overlays, title) to ``path``."""
    from falv.hub.io import atomic_open

    path = Path(path)
    with atomic_open(path, "wb") as handle:
        strip_image(explanation, alpha=alpha, scale=scale).save(handle, format="PNG", optimize=True)
    return path


def render_gif(
    explanation: Explanation,
    path: str | os.PathLike[str],
    *,
    fps: float = 2.0,
    alpha: float = 0.5,
    scale: str = "max",
) -> Path:
    """Write an animated GIF of the overlays (looping, ``fps`` frames per second)."""
    from falv.hub.io import atomic_open

    Image, _, _ = _pil()
    images = [Image.fromarray(f) for f in _titled_frames(explanation, alpha, scale)]
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        images[0].save(handle, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(20, round(1000 / fps)), loop=0)
    return path


def render_mp4(
    explanation: Explanation,
    path: str | os.PathLike[str],
    *,
    fps: float = 2.0,
    alpha: float = 0.5,
    scale: str = "max",
) -> Path:
    """Write an H.264 MP4 of the overlays with PyAV (``fps`` frames per second)."""
    import av

    from falv.hub.io import atomic_open

    frames = _titled_frames(explanation, alpha, scale)
    h, w = frames[0].shape[:2]
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        out = av.open(handle, "w", format="mp4")
        try:
            stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000),
                                    options={"crf": "20", "preset": "medium"})
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for image in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        finally:
            out.close()
    return path


def save_explanation(
    explanation: Explanation,
    out_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] | str = ("png", "gif"),
    stem: str = "explain",
    fps: float = 2.0,
    alpha: float = 0.5,
    scale: str = "max",
) -> dict[str, Path]:
    """Write ``out_dir/<stem>.png`` / ``.gif`` / ``.mp4`` for the requested ``formats``."""
    names = parse_formats(formats)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writers = {"png": lambda p: render_strip(explanation, p, alpha=alpha, scale=scale),
               "gif": lambda p: render_gif(explanation, p, fps=fps, alpha=alpha, scale=scale),
               "mp4": lambda p: render_mp4(explanation, p, fps=fps, alpha=alpha, scale=scale)}
    return {name: writers[name](out / f"{stem}.{name}") for name in names}
