"""Video input for falv: probe, decode, sample, and decode safely in worker processes.

``falv.video.errors`` and ``falv.video.sampling`` are pure Python; the PyAV
backed parts (``probe``, ``read_frames``, ``read_clips``) are imported on first
use, so ``from falv.video import plan_windows`` does not load FFmpeg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from falv._lazy import lazy_exports
from falv.video.errors import (
    ERROR_CODES,
    CorruptVideoError,
    DecoderCrashedError,
    DecodeTimeoutError,
    NoDecodableFrameError,
    NotAVideoError,
    NoVideoStreamError,
    UnexpectedDecodeError,
    UnsupportedCodecError,
    VideoError,
    VideoNotFoundError,
    VideoPermissionError,
    VideoTooLargeError,
    error_record,
)
from falv.video.info import DEFAULT_LIMITS, VideoInfo, VideoLimits

_LAZY = {
    "probe": "falv.video.metadata",
    "read_frames": "falv.video.decode",
    "read_clips": "falv.video.decode",
    "ClipsResult": "falv.video.decode",
    "decode_in_workers": "falv.video.pool",
    "Window": "falv.video.sampling",
    "plan_windows": "falv.video.sampling",
    "uniform_timestamps": "falv.video.sampling",
    "dense_clip_timestamps": "falv.video.sampling",
    "random_clip_start": "falv.video.sampling",
    "feature_index_to_seconds": "falv.video.sampling",
    "seconds_to_feature_index": "falv.video.sampling",
    "seconds_to_feature_position": "falv.video.sampling",
}

__all__ = [
    "VideoInfo",
    "VideoLimits",
    "DEFAULT_LIMITS",
    "VideoError",
    "VideoNotFoundError",
    "VideoPermissionError",
    "NotAVideoError",
    "NoVideoStreamError",
    "NoDecodableFrameError",
    "CorruptVideoError",
    "UnsupportedCodecError",
    "VideoTooLargeError",
    "DecodeTimeoutError",
    "DecoderCrashedError",
    "UnexpectedDecodeError",
    "ERROR_CODES",
    "error_record",
    *_LAZY,
]

if TYPE_CHECKING:  # pragma: no cover
    from falv.video.decode import ClipsResult, read_clips, read_frames
    from falv.video.pool import decode_in_workers
    from falv.video.metadata import probe
    from falv.video.sampling import (
        Window,
        dense_clip_timestamps,
        feature_index_to_seconds,
        plan_windows,
        random_clip_start,
        seconds_to_feature_index,
        seconds_to_feature_position,
        uniform_timestamps,
    )


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
