"""Why a video could not be read.

Every failure of :mod:`falv.video` is a :class:`VideoError`. Its message is one
line that names the file and says what is wrong (``"clip.mp4: not a video file
(...)"``), and its class carries a stable short :attr:`~VideoError.code` for
JSON error records (``{"path": ..., "error": "not_found", "message": ...}``).
Errors pickle, so a worker process can hand them back to the parent.

This module imports nothing heavy (no PyAV), so callers can catch the errors
without paying for the decoder.
"""

from __future__ import annotations

import os
from typing import Any

from falv.errors import FalvError

__all__ = [
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
]


class VideoError(FalvError):
    """A video cannot be probed or decoded.

    ``path`` is the file (``str``); ``detail`` is the human reason without the
    path. ``str(err)`` is ``"<path>: <detail>"`` on one line.
    """

    #: Stable identifier of the failure kind, used in JSON error records.
    code: str = "video_error"
    #: Default reason when none is given.
    default_detail: str = "cannot read this video"

    def __init__(self, path: str | os.PathLike[str] | None = None, detail: str | None = None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.detail = _one_line(detail or self.default_detail)
        super().__init__(f"{self.path}: {self.detail}" if self.path is not None else self.detail)

    def __reduce__(self) -> tuple[Any, ...]:  # keep (path, detail) across processes
        return (type(self), (self.path, self.detail))

    def to_dict(self) -> dict[str, str | None]:
        """The JSON error record: ``{"path", "error" (the code), "message"}``."""
        return {"path": self.path, "error": self.code, "message": str(self)}


class VideoNotFoundError(VideoError):
    code = "not_found"
    default_detail = "no such file"


class VideoPermissionError(VideoError):
    code = "permission_denied"
    default_detail = "permission denied (the file is not readable by this user)"


class NotAVideoError(VideoError):
    code = "not_a_video"
    default_detail = "not a video file (the data is not in any known video format)"


class NoVideoStreamError(VideoError):
    code = "no_video_stream"
    default_detail = "the file has no video stream (audio only?)"


class NoDecodableFrameError(VideoError):
    code = "no_decodable_frame"
    default_detail = "the video stream contains no frame that can be decoded"


class CorruptVideoError(VideoError):
    code = "corrupt"
    default_detail = "the video is corrupt or truncated and cannot be read"


class UnsupportedCodecError(VideoError):
    code = "unsupported_codec"
    default_detail = "the video codec is not supported by this build of FFmpeg"


class VideoTooLargeError(VideoError):
    code = "too_large"
    default_detail = "the video exceeds the configured size limits"


class DecodeTimeoutError(VideoError):
    code = "timeout"
    default_detail = "decoding took longer than the time limit"


class DecoderCrashedError(VideoError):
    code = "decoder_crashed"
    default_detail = "the decoder process crashed on this file"


class UnexpectedDecodeError(VideoError):
    """A bug or an error falv did not anticipate; the detail names the exception."""

    code = "unexpected_error"
    default_detail = "unexpected error while decoding"


#: code -> class, for turning JSON records back into types.
ERROR_CODES: dict[str, type[VideoError]] = {
    cls.code: cls
    for cls in (
        VideoError,
        VideoNotFoundError,
        VideoPermissionError,
        NotAVideoError,
        NoVideoStreamError,
        NoDecodableFrameError,
        CorruptVideoError,
        UnsupportedCodecError,
        VideoTooLargeError,
        DecodeTimeoutError,
        DecoderCrashedError,
        UnexpectedDecodeError,
    )
}


def error_record(error: BaseException, path: str | os.PathLike[str] | None = None) -> dict[str, str | None]:
    """A JSON error record for any exception (non-video errors get ``unexpected_error``)."""
    if isinstance(error, VideoError):
        return error.to_dict()
    wrapped = UnexpectedDecodeError(path, f"{type(error).__name__}: {error}")
    return wrapped.to_dict()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
