"""What the example notebooks share: a small synthetic dataset and a quickly trained model.

Every notebook runs on its own (CI executes each one separately): it calls these to get
data and a model, and reuses what an earlier notebook left in the same working folder.
The folder is ``$FALV_EXAMPLES_WORK`` (default ``falv-examples-work`` next to the notebooks).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Small enough to train in well under a minute on two CPU cores.
FRAMES, SIZE = 4, 32
MODEL = dict(patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
#: Three classes that differ in colour, texture and shape.
CLASSES = ("red-solid-circle", "green-striped-cross", "blue-checkered-triangle")


def work_dir() -> Path:
    path = Path(os.environ.get("FALV_EXAMPLES_WORK", Path(__file__).resolve().parent / "falv-examples-work"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def synth_data(work: Path | None = None) -> Path:
    """Three appearance classes, 10 videos each, with train/val/test lists (`falv synth`)."""
    from falv.data.synth import SynthConfig, generate

    out = (work or work_dir()) / "data"
    if not (out / "test.csv").is_file():
        generate(out, SynthConfig(mode="appearance", classes=CLASSES, videos_per_class=10, seed=0, width=48,
                                  height=48, duration=(1.0, 1.5), splits=(0.6, 0.2, 0.2)), overwrite=True)
    return out


def train_config(data: Path, out: Path, **overrides):
    from falv.training import TrainConfig

    options = dict(data=str(data), out=str(out), preset="tiny", num_frames=FRAMES, image_size=SIZE,
                   model_overrides=dict(MODEL), epochs=12, batch_size=4, lr=2e-3, precision="fp32", seed=0)
    options.update(overrides)
    return TrainConfig(**options)


def quick_model(work: Path | None = None) -> Path:
    """The best model of a short training run on :func:`synth_data` (trained once, then reused)."""
    from falv.training import train

    work = work or work_dir()
    run = work / "run"
    if not (run / "best" / "config.json").is_file():
        train(train_config(synth_data(work), run), echo=None)
    return run / "best"
