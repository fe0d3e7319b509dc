"""FALImageProcessor: frames in, ``pixel_values`` (B, T, C, H, W) out.

Resize the shortest edge, centre-crop, rescale to [0, 1], normalise: the eval
pipeline of :mod:`falv.data.transforms`, one code path for inference and for
evaluation during training. The JSON format (preprocessor_config.json) uses
transformers' key names, so TimeSformer processor configs read as they are.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from falv.config import IMAGENET_MEAN, IMAGENET_STD, FALConfig
from falv.data import transforms as T
from falv.errors import ConfigError

PREPROCESSOR_NAME = "preprocessor_config.json"


class BatchFeature(dict):
    """A dict of tensors with attribute access and ``.to(device or dtype)``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    def to(self, *args: Any, **kwargs: Any) -> BatchFeature:
        return BatchFeature(
            {k: v.to(*args, **kwargs) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
             for k, v in self.items()}
        )


def _as_frames_tensor(frames: Any) -> torch.Tensor:
    """One video (list of frames or array) -> float tensor (T, C, H, W) in pixel units."""
    if isinstance(frames, torch.Tensor):
        arr = frames
    elif isinstance(frames, np.ndarray):
        arr = torch.from_numpy(np.ascontiguousarray(frames))
    else:
        frames = list(frames)
        if not frames:
            raise ValueError("a video needs at least one frame")
        tensors = [f if isinstance(f, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(f)) for f in frames]
        if len({tuple(t.shape) for t in tensors}) > 1:
            raise ValueError("all frames of a video must have the same shape")
        arr = torch.stack(tensors)
    if arr.ndim == 3:  # a single frame
        arr = arr.unsqueeze(0)
    if arr.ndim != 4:
        raise ValueError(f"a video must be (frames, H, W, 3) or (frames, 3, H, W), got shape {tuple(arr.shape)}")
    if arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
        arr = arr.permute(0, 3, 1, 2)  # channels-last -> channels-first
    elif arr.shape[-1] in (1, 3) and arr.shape[1] in (1, 3) and arr.dtype == torch.uint8:
        arr = arr.permute(0, 3, 1, 2)  # ambiguous tiny frames: uint8 frames are HxWxC
    if arr.shape[1] == 1:
        arr = arr.expand(-1, 3, -1, -1)
    return arr


def _is_single_video(videos: Any) -> bool:
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        return videos.ndim <= 4
    first = videos[0]
    return isinstance(first, (np.ndarray, torch.Tensor)) and first.ndim == 3


class FALImageProcessor:
    """Prepare video frames for a FAL model (transformers-compatible config keys)."""

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | int | None = None,
        do_center_crop: bool = True,
        crop_size: dict[str, int] | int | None = None,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        num_frames: int | None = None,
        **_: Any,
    ) -> None:
        self.do_resize = do_resize
        self.size = {"shortest_edge": size} if isinstance(size, int) else dict(size or {"shortest_edge": 224})
        self.do_center_crop = do_center_crop
        if isinstance(crop_size, int):
            crop_size = {"height": crop_size, "width": crop_size}
        self.crop_size = dict(crop_size or {"height": 224, "width": 224})
        self.do_rescale = do_rescale
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = do_normalize
        self.image_mean = [float(x) for x in image_mean]
        self.image_std = [float(x) for x in image_std]
        self.num_frames = num_frames
        if "shortest_edge" not in self.size and not {"height", "width"} <= set(self.size):
            raise ConfigError(f"size must give shortest_edge or height and width, got {self.size}")

    # -- construction ----------------------------------------------------
    @classmethod
    def from_config(cls, config: FALConfig) -> FALImageProcessor:
        """The processor a model was made for: its image size, mean and std."""
        return cls(
            # the short side first goes to the model's resize size where its config has one (TSM: 256
            # for a 224 crop), else to the crop size
            size={"shortest_edge": getattr(config, "resize_size", None) or config.image_size},
            crop_size={"height": config.image_size, "width": config.image_size},
            image_mean=config.image_mean,
            image_std=config.image_std,
            num_frames=config.num_frames,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FALImageProcessor:
        return cls(**data)

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, **hub: Any) -> FALImageProcessor:
        """From a falv or TimeSformer directory / hub id: its preprocessor config, else its model config."""
        from falv.hub.load import load_config, load_preprocessor_config

        from falv.errors import CheckpointError

        data = load_preprocessor_config(path_or_id, **hub)
        if data is None:
            return cls.from_config(load_config(path_or_id, **hub))
        # what the preprocessor config gives wins; what it leaves out comes from the model config
        try:
            merged = cls.from_config(load_config(path_or_id, **hub)).to_dict()
        except CheckpointError:  # another family's config (e.g. the CNN baseline): the file alone
            merged = {}
        merged.update({k: v for k, v in data.items() if v is not None})
        return cls.from_dict(merged)

    @classmethod
    def from_model_dir(cls, path_or_id: str | os.PathLike, **hub: Any) -> FALImageProcessor | None:
        """:meth:`from_pretrained` where the model has a preprocessor config
        (``preprocessor_config.json``, as transformers directories do), else None (then the
        model config's values apply)."""
        from falv.hub.load import load_preprocessor_config

        try:
            if load_preprocessor_config(path_or_id, **hub) is None:
                return None
        except Exception:  # a .pyth file or an id we cannot resolve: the loader reports it
            return None
        return cls.from_pretrained(path_or_id, **hub)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_processor_type": "FALImageProcessor",
            "do_resize": self.do_resize,
            "size": self.size,
            "do_center_crop": self.do_center_crop,
            "crop_size": self.crop_size,
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "num_frames": self.num_frames,
        }

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        from falv.hub.io import atomic_write_text

        path = Path(directory) / PREPROCESSOR_NAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    def __repr__(self) -> str:
        return f"FALImageProcessor({self.to_dict()})"

    # -- processing ------------------------------------------------------
    @property
    def resize_target(self) -> int | tuple[int, int]:
        """What a decoder should scale frames to before :meth:`preprocess_clip` (shortest side or (H, W))."""
        if "shortest_edge" in self.size:
            return int(self.size["shortest_edge"])
        return int(self.size["height"]), int(self.size["width"])

    def preprocess_clip(self, frames: Any) -> torch.Tensor:
        """One video -> float32 (T, C, H, W), the eval pipeline of falv.data.transforms."""
        clip = _as_frames_tensor(frames)
        if self.do_rescale and clip.is_floating_point() and clip.numel() and 0.0 < float(clip.abs().max()) <= 1.0:
            warnings.warn("frames look already rescaled to [0, 1]; pass do_rescale=False to keep them",
                          stacklevel=3)
        clip = clip.to(torch.float32)
        if self.do_resize:
            target = self.resize_target
            clip = T.resize_shortest_side(clip, target) if isinstance(target, int) else T.resize(clip, target)
        if self.do_center_crop:
            clip = T.center_crop(clip, (int(self.crop_size["height"]), int(self.crop_size["width"])))
        if self.do_rescale:
            clip = clip * self.rescale_factor
        if self.do_normalize:
            clip = T.normalize(clip, self.image_mean, self.image_std)
        return clip

    def __call__(self, videos: Any, return_tensors: str | None = "pt", **_: Any) -> BatchFeature:
        """``videos``: one video (a list of HxWx3 uint8 or 3xHxW float frames, or an array
        (T, H, W, 3) / (T, 3, H, W)) or a list of videos of equal length.
        Returns ``{"pixel_values": (B, T, C, H, W) float32}``."""
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        if isinstance(videos, (list, tuple)) and not videos:
            raise ValueError("no video given")
        batch = [videos] if _is_single_video(videos) else list(videos)
        clips = [self.preprocess_clip(v) for v in batch]
        if len({tuple(c.shape) for c in clips}) > 1:
            raise ValueError("videos in one batch must have the same number of frames and size")
        pixel_values = torch.stack(clips)
        if return_tensors == "np":
            return BatchFeature(pixel_values=pixel_values.numpy())
        return BatchFeature(pixel_values=pixel_values)

    preprocess = __call__


class AutoImageProcessor:
    """``AutoImageProcessor.from_pretrained(dir)``, as in the FAL model card, without transformers."""

    @staticmethod
    def from_pretrained(path_or_id: str | os.PathLike, **hub: Any) -> FALImageProcessor:
        return FALImageProcessor.from_pretrained(path_or_id, **hub)
