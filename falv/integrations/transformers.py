"""falv models inside transformers: Auto classes and ``pipeline("video-classification")``.

Registered automatically when falv and transformers are both imported:
``AutoConfig`` knows ``model_type: "fal"``, ``AutoModelForVideoClassification``
builds :class:`FALTransformersModel` (same weights, same forward as
:class:`falv.FALForVideoClassification`), and ``AutoImageProcessor`` reads
falv's preprocessor_config.json.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoModelForVideoClassification, PreTrainedModel
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.modeling_outputs import ImageClassifierOutput

from falv.config import MODEL_TYPE, FALConfig
from falv.model.transformer import ClassificationHead, FALModel, classification_loss
from falv.processing import FALImageProcessor as _Processor

_ConfigBase = getattr(transformers, "PreTrainedConfig", None) or transformers.PretrainedConfig


class FALTransformersConfig(_ConfigBase):
    """transformers' view of :class:`falv.FALConfig` (same config.json)."""

    model_type = MODEL_TYPE

    def to_fal(self) -> FALConfig:
        data = self.to_dict()
        data["model_type"] = MODEL_TYPE
        return FALConfig.from_dict(data)


class FALTransformersModel(PreTrainedModel):
    """A ``PreTrainedModel`` holding the same modules as FALForVideoClassification
    (``fal``, ``head``), so model.safetensors loads with the same keys."""

    config_class = FALTransformersConfig
    base_model_prefix = "fal"
    main_input_name = "pixel_values"

    def __init__(self, config: FALTransformersConfig) -> None:
        super().__init__(config)
        fal_config = config.to_fal()
        self.fal_config = fal_config
        self.fal = FALModel(fal_config)
        self.head = ClassificationHead(fal_config)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Weights come from the checkpoint; falv's own init runs in FALForVideoClassification."""

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **_: Any,
    ) -> ImageClassifierOutput:
        out = self.fal(pixel_values, output_attentions=bool(output_attentions),
                       output_hidden_states=bool(output_hidden_states))
        logits = self.head(out.pooler_output)
        loss = None if labels is None else classification_loss(logits, labels, self.fal_config.is_multilabel)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                     attentions=out.attentions)


class FALImageProcessor(BaseImageProcessor):
    """transformers' view of :class:`falv.FALImageProcessor` (same preprocessor_config.json)."""

    model_input_names = ["pixel_values"]

    def __init__(self, **kwargs: Any) -> None:
        self._falv = _Processor(**kwargs)
        super().__init__()

    def preprocess(self, videos: Any, return_tensors: str | None = None, **_: Any) -> BatchFeature:
        pixel_values = self._falv(videos, return_tensors="pt")["pixel_values"]
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)

    def __call__(self, videos: Any, *args: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(videos, *args, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return self._falv.to_dict()


_registered = False


def register() -> None:
    """Register falv's classes with transformers' Auto classes (idempotent)."""
    global _registered
    if _registered:
        return
    AutoConfig.register(MODEL_TYPE, FALTransformersConfig, exist_ok=True)
    AutoModelForVideoClassification.register(FALTransformersConfig, FALTransformersModel, exist_ok=True)
    import inspect

    if "image_processor_classes" in inspect.signature(AutoImageProcessor.register).parameters:  # transformers 5
        AutoImageProcessor.register(FALTransformersConfig, exist_ok=True,
                                    image_processor_classes={"pil": FALImageProcessor, "torchvision": FALImageProcessor})
    else:  # transformers 4
        AutoImageProcessor.register(FALTransformersConfig, slow_image_processor_class=FALImageProcessor, exist_ok=True)
    _registered = True
