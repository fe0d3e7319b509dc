"""``make demo``: the main job end to end on built-in (generated) data.

1. ``falv synth``: a small appearance set of real H.264 videos, plus untrimmed
   videos with several actions and their ground truth.
2. Fit the ``tiny`` FAL preset on the training split for a few epochs: a short,
   plain AdamW loop, enough for a demo (not a training recipe).
3. ``falv label`` the held-out videos and the untrimmed ones into every format,
   and report the held-out top-1 accuracy.

Usage: ``python -m falv.demo [OUT_DIR] [--epochs N]``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def fit(model, source, epochs: int, seed: int = 0) -> None:
    """A few epochs of AdamW with a cosine schedule on ``source`` (demo-sized)."""
    from torch.utils.data import DataLoader

    from falv.data.dataset import VideoClipDataset, collate
    from falv.data.transforms import train_transform

    cfg = model.config
    transform = train_transform(crop_size=cfg.image_size, shortest_edge=cfg.image_size, scale=(0.6, 1.0),
                                flip=False, mean=cfg.image_mean, std=cfg.image_std)
    dataset = VideoClipDataset(source, cfg.num_frames, transform, train=True, seed=seed)
    loader = DataLoader(dataset, batch_size=8, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(seed))
    steps = epochs * len(loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.15)
    model.train()
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        total, correct, seen = 0.0, 0, 0
        for batch in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(batch["pixel_values"], labels=batch["labels"])
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += float(out.loss.detach()) * len(batch["labels"])
            correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
            seen += len(batch["labels"])
        _say(f"epoch {epoch + 1}/{epochs}: loss {total / seen:.3f}, train accuracy {correct / seen:.0%}")
    model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="demo-output")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--videos-per-class", type=int, default=24)
    args = parser.parse_args(argv)

    from falv import FALForVideoClassification, preset
    from falv.data.sources import load_source
    from falv.data.synth import SynthConfig, generate
    from falv.labeling.engine import label
    from falv.labeling.export import export_formats

    started = time.monotonic()
    out = Path(args.out)
    data, model_dir, labels_dir = out / "data", out / "model", out / "labels"
    shutil.rmtree(labels_dir, ignore_errors=True)  # labels of an earlier demo run came from another model
    torch.manual_seed(0)

    _say(f"1/3 synthesising videos into {data}")
    config = SynthConfig(mode="appearance", classes=4, videos_per_class=args.videos_per_class, seed=0,
                         untrimmed=2, untrimmed_duration=(16.0, 24.0))
    manifest = generate(data, config, overwrite=True)
    classes = list(manifest.classes)
    _say(f"    {len(manifest.videos)} videos of {len(classes)} classes: {', '.join(classes)}")

    _say(f"2/3 fitting the tiny FAL preset ({args.epochs} epochs)")
    model = FALForVideoClassification(preset("tiny", id2label=dict(enumerate(classes)),
                                             image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)))
    fit(model, load_source(data, split="train"), args.epochs)
    model.save_pretrained(model_dir)
    _say(f"    model saved to {model_dir}")

    _say(f"3/3 labelling held-out and untrimmed videos into {labels_dir}")
    test = load_source(data, split="test")
    truth = {str(Path(e.path).resolve()): e.labels[0] for e in test.entries}
    untrimmed = sorted(str(p) for p in (data / "untrimmed").glob("*.mp4"))
    records = list(label(list(truth), str(model_dir), out_dir=labels_dir, clips=2))
    records += list(label(untrimmed, str(model_dir), out_dir=labels_dir, window=2.0, stride=1.0,
                          smoothing=3, min_duration=1.5, embeddings=True))
    written = export_formats(labels_dir, ["jsonl", "csv", "label-studio", "fiftyone", "activitynet", "webvtt"],
                             classes=classes)
    hits = [r.labels[0].label == truth[str(Path(r.path).resolve())] for r in records
            if r.error is None and str(Path(r.path).resolve()) in truth]
    for r in records[-len(untrimmed):]:
        found = ", ".join(f"{s.label} {s.start:.0f}-{s.end:.0f}s" for s in r.segments) or "none"
        _say(f"    {Path(r.path).name}: segments {found}")
    _say(f"held-out top-1 accuracy: {sum(hits) / max(len(hits), 1):.1%} on {len(hits)} videos")
    for name, path in written.items():
        _say(f"    {name:12} {path}")
    _say(f"ground truth of the untrimmed videos: {data / 'untrimmed' / 'ground_truth.json'}")
    _say(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
