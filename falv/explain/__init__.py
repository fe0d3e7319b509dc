"""Why the model said what it said: attention rollout over space-time schemes, rendered as
heat maps on the frames.

``rollout`` is pure tensor arithmetic (torch only); ``render`` needs Pillow (the
``plots`` extra). Both are imported on first use, so ``import falv.explain`` is cheap::

    from falv.explain import explain, save_explanation
    result = explain(model, frames)            # frames: (T, H, W, 3) uint8
    save_explanation(result, "out/", formats=("png", "gif"))
"""

from __future__ import annotations

from falv._lazy import lazy_exports
from falv.errors import FalvError


class ExplainError(FalvError):
    """An explanation cannot be computed or rendered (bad input, missing optional dependency)."""


_LAZY = {
    "Explanation": "falv.explain.rollout",
    "explain": "falv.explain.rollout",
    "attention_rollout": "falv.explain.rollout",
    "cls_relevance": "falv.explain.rollout",
    "mixing_matrix": "falv.explain.rollout",
    "rollout_matrix": "falv.explain.rollout",
    "overlay_frames": "falv.explain.render",
    "render_strip": "falv.explain.render",
    "render_gif": "falv.explain.render",
    "render_mp4": "falv.explain.render",
    "save_explanation": "falv.explain.render",
}

__all__ = ["ExplainError", *_LAZY]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
