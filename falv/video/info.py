"""Plain data about a video: :class:`VideoInfo` (what :func:`falv.video.probe` returns)
and :class:`VideoLimits` (what a caller is willing to decode).

No PyAV import here: these types travel between processes and into JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from typing import Any


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a video file before decoding all of it.

    Times are seconds. ``width``/``height`` are the *displayed* size, i.e. after
    the rotation in the file's display matrix is applied. ``rotation`` is the
    clockwise rotation, in degrees (0, 90, 180 or 270), that a player applies to
    the coded picture; it is the value of the legacy ``rotate`` tag that phones
    write, and the negative of FFmpeg's counter-clockwise display-matrix angle.

    ``num_frames`` is exact when ``num_frames_exact`` is true (the container
    stores a frame count: MP4, MOV, AVI); otherwise it is ``round(duration * fps)``
    (Matroska/WebM, MPEG-TS, raw streams) and may be off by a few frames.
    ``fps`` is the stream's average rate (0.0 when unknown). ``start_time`` is the
    presentation time of the stream's first frame in the container's clock;
    :func:`falv.video.read_frames` timestamps are relative to it (0 = first frame).
    """

    path: str
    duration: float
    fps: float
    num_frames: int
    num_frames_exact: bool
    width: int
    height: int
    rotation: int
    codec: str
    container: str
    start_time: float
    time_base: Fraction
    bit_rate: int | None = None
    has_audio: bool = False
    pixel_format: str | None = None
    coded_width: int = 0
    coded_height: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (``time_base`` becomes the string ``"num/den"``)."""
        out = dataclasses.asdict(self)
        out["time_base"] = f"{self.time_base.numerator}/{self.time_base.denominator}"
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoInfo:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["time_base"] = Fraction(data["time_base"])
        return cls(**data)


#: 8K UHD, the largest frame falv decodes unless told otherwise.
DEFAULT_MAX_PIXELS = 7680 * 4320


@dataclass(frozen=True)
class VideoLimits:
    """Upper bounds checked before decoding; exceeding one raises
    :class:`falv.video.VideoTooLargeError`. ``None`` disables a bound."""

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_duration: float | None = None

    def check(self, info: VideoInfo) -> str | None:
        """The reason ``info`` exceeds a limit, or ``None`` when it fits."""
        pixels = info.width * info.height
        if self.max_pixels is not None and pixels > self.max_pixels:
            return (
                f"frame size {info.width}x{info.height} ({pixels:,} pixels) exceeds the limit "
                f"of {self.max_pixels:,} pixels"
            )
        if self.max_duration is not None and info.duration > self.max_duration:
            return f"duration {info.duration:.1f} s exceeds the limit of {self.max_duration:g} s"
        return None


DEFAULT_LIMITS = VideoLimits()
