"""Tests of falv.data.dataset: sampling, determinism, DataLoader workers and bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from falv.data import transforms as T
from falv.data.dataset import (VideoClipDataset, collate, dense_timestamps, item_seed, loader_context,
                               segment_timestamps)
from falv.data.sources import DatasetSource, VideoEntry, load_source
from falv.errors import ConfigError
from falv.video import VideoError
from falv.video.testing import frame_index, write_test_video

FPS, FRAMES = 10, 20  # 2 s videos
CLASSES = ["jump", "run", "walk"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """root/<class>/<n>.mp4: two 48x64 videos per class, 2 s at 10 fps, frame i shows i."""
    root = tmp_path_factory.mktemp("videos")
    for c in CLASSES:
        (root / c).mkdir()
        for n in range(2):
            write_test_video(root / c / f"{n}.mp4", frames=FRAMES, fps=FPS, size=(48, 64))
    return root


@pytest.fixture(scope="module")
def broken(videos, tmp_path_factory) -> DatasetSource:
    """The six good videos plus an undecodable one at index 1 and a missing one at index 4."""
    bad = tmp_path_factory.mktemp("bad") / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 50)
    src = load_source(videos)
    entries = list(src.entries)
    entries.insert(1, VideoEntry(str(bad), ("jump",)))
    entries.insert(4, VideoEntry(str(bad.parent / "gone.mp4"), ("run",)))
    return DatasetSource(entries, src.classes, kind="list", name="broken")


def indices(clip: torch.Tensor) -> list[int]:
    """Frame indices drawn in a (T, C, H, W) uint8 clip."""
    return [frame_index(f.permute(1, 2, 0).numpy()) for f in clip]


def run_epoch(ds: VideoClipDataset, workers: int, epoch: int, **kw) -> list[dict[str, torch.Tensor]]:
    ds.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=collate,
                        multiprocessing_context=loader_context(workers), **kw)
    return list(loader)


# -- pure sampling helpers ------------------------------------------------------------------
@given(
    start=st.floats(0, 100),
    length=st.floats(0.01, 100),
    n=st.integers(1, 64),
    seed=st.one_of(st.none(), st.integers(0, 2**32)),
)
@settings(max_examples=80, deadline=None)
def test_segment_timestamps_one_per_segment(start, length, n, seed):
    rng = None if seed is None else np.random.default_rng(seed)
    ts = segment_timestamps(start, start + length, n, rng)
    assert len(ts) == n
    seg = length / n
    for k, t in enumerate(ts):
        assert start + k * seg - 1e-9 <= t <= start + (k + 1) * seg + 1e-9
    if rng is None:
        assert ts == pytest.approx([start + (k + 0.5) * seg for k in range(n)])


@given(
    length=st.floats(0.05, 20),
    n=st.integers(1, 32),
    stride=st.floats(0.01, 1.0),
    seed=st.one_of(st.none(), st.integers(0, 2**32)),
)
@settings(max_examples=80, deadline=None)
def test_dense_timestamps_within_segment(length, n, stride, seed):
    rng = None if seed is None else np.random.default_rng(seed)
    ts = dense_timestamps(1.0, 1.0 + length, n, stride, rng)
    assert len(ts) == n and ts == sorted(ts)
    assert all(1.0 <= t < 1.0 + length for t in ts)
    if n * stride <= length:
        assert np.allclose(np.diff(ts), stride)


def test_item_seed_depends_on_every_part():
    seeds = {item_seed(s, e, i) for s in range(3) for e in range(3) for i in range(50)}
    assert len(seeds) == 3 * 3 * 50
    assert item_seed(1, 2, 3) == item_seed(1, 2, 3)


# -- items ----------------------------------------------------------------------------------
def test_eval_items_sample_segment_centres(videos):
    ds = VideoClipDataset(load_source(videos), num_frames=4)
    item = ds[0]
    assert item["pixel_values"].shape == (4, 3, 48, 64) and item["pixel_values"].dtype == torch.uint8
    # 2 s in four segments: centres 0.25, 0.75, 1.25, 1.75 s -> frames 2, 7, 12, 17
    assert indices(item["pixel_values"]) == [2, 7, 12, 17]
    assert item["labels"] == 0 and item["index"] == 0
    assert ds[5]["labels"] == 2
    assert ds.classes == CLASSES


def test_train_items_jitter_within_segments(videos):
    ds = VideoClipDataset(load_source(videos), num_frames=4, train=True, seed=7)
    seen = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        got = indices(ds[0]["pixel_values"])
        assert all(5 * k <= i < 5 * (k + 1) for k, i in enumerate(got))
        seen.add(tuple(got))
    assert len(seen) > 1


def test_segment_entries_sample_inside_the_segment(videos):
    path = str(videos / "run" / "0.mp4")
    src = DatasetSource([VideoEntry(path, ("run",), start=1.0, end=2.0)], CLASSES)
    assert indices(VideoClipDataset(src, num_frames=2)[0]["pixel_values"]) == [12, 17]
    train = VideoClipDataset(src, num_frames=5, train=True)
    assert all(10 <= i <= 19 for i in indices(train[0]["pixel_values"]))


def test_dense_clip_sampling(videos):
    ds = VideoClipDataset(load_source(videos), num_frames=4, clip_sampling="dense", frame_stride=2)
    # centred 0.8 s window: 0.7, 0.9, 1.1, 1.3 s -> frames 7, 9, 11, 13
    assert indices(ds[0]["pixel_values"]) == [7, 9, 11, 13]
    train = VideoClipDataset(load_source(videos), num_frames=4, clip_sampling="dense", frame_stride=3, train=True)
    got = indices(train[2]["pixel_values"])
    assert np.all(np.diff(got) == 3)


def test_size_hint_goes_to_the_decoder(videos):
    ds = VideoClipDataset(load_source(videos), num_frames=2, size_hint=24)
    assert ds[0]["pixel_values"].shape == (2, 3, 24, 32)
    tf = T.eval_transform(shortest_edge=20, crop_size=16)
    ds = VideoClipDataset(load_source(videos), num_frames=2, transform=tf)
    assert ds.size_hint == 20
    item = ds[0]["pixel_values"]
    assert item.shape == (2, 3, 16, 16) and item.dtype == torch.float32


def test_eval_transform_matches_decode_then_transform(videos):
    from falv.video import read_frames

    tf = T.eval_transform(shortest_edge=32, crop_size=28)
    ds = VideoClipDataset(load_source(videos), num_frames=4, transform=tf)
    frames = read_frames(ds.source[3].path, segment_timestamps(0.0, 2.0, 4), size=32)
    torch.testing.assert_close(ds[3]["pixel_values"], tf(frames))


def test_multilabel_targets_and_collate(videos):
    a, b = str(videos / "jump" / "0.mp4"), str(videos / "walk" / "1.mp4")
    src = DatasetSource([VideoEntry(a, ("jump", "walk")), VideoEntry(b, ("run",))], CLASSES, multilabel=True)
    ds = VideoClipDataset(src, num_frames=2, transform=T.eval_transform(16))
    batch = collate([ds[0], None, ds[1]])
    assert batch["pixel_values"].shape == (2, 2, 3, 16, 16)
    assert batch["labels"].tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    assert batch["labels"].dtype == torch.float32 and batch["index"].tolist() == [0, 1]
    assert collate([None, None]) is None


def test_unlabelled_entries_get_minus_one(videos):
    src = DatasetSource([VideoEntry(str(videos / "jump" / "0.mp4"))], [])
    assert VideoClipDataset(src, num_frames=1)[0]["labels"] == -1


# -- DataLoader workers and determinism ----------------------------------------------------------
def test_dataloader_workers_shapes_labels_and_determinism(videos):
    src = load_source(videos)
    ds = VideoClipDataset(src, num_frames=4, transform=T.train_transform(16, shortest_edge=20), train=True, seed=3)
    two = run_epoch(ds, workers=2, epoch=1)
    assert [b["pixel_values"].shape for b in two] == [(3, 4, 3, 16, 16)] * 2
    labels = torch.cat([b["labels"] for b in two]).tolist()
    assert labels == [src.label_indices(i)[0] for i in range(len(src))] == [0, 0, 1, 1, 2, 2]
    assert torch.cat([b["index"] for b in two]).tolist() == list(range(6))
    # the same seed and epoch give the same tensors with any number of workers
    zero = run_epoch(ds, workers=0, epoch=1)
    for x, y in zip(two, zero):
        assert torch.equal(x["pixel_values"], y["pixel_values"])
    other = run_epoch(ds, workers=0, epoch=2)
    assert not torch.equal(other[0]["pixel_values"], zero[0]["pixel_values"])
    reseeded = VideoClipDataset(src, 4, T.train_transform(16, shortest_edge=20), train=True, seed=4)
    assert not torch.equal(run_epoch(reseeded, 0, 1)[0]["pixel_values"], zero[0]["pixel_values"])


def test_set_epoch_reaches_persistent_workers(videos):
    ds = VideoClipDataset(load_source(videos), 3, T.train_transform(16, shortest_edge=20), train=True)
    loader = DataLoader(ds, batch_size=6, num_workers=2, collate_fn=collate, persistent_workers=True,
                        multiprocessing_context=loader_context(2))
    ds.set_epoch(0)
    first = next(iter(loader))["pixel_values"]
    ds.set_epoch(5)
    later = next(iter(loader))["pixel_values"]
    expected = collate([ds[i] for i in range(6)])["pixel_values"]  # epoch 5 in this process
    assert torch.equal(later, expected) and not torch.equal(first, later)


def test_transform_without_generator_is_seeded(videos):
    def noisy(frames):  # uses the global torch RNG
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        return x + torch.rand(())

    ds = VideoClipDataset(load_source(videos), num_frames=2, transform=noisy, train=True)
    epoch0 = ds[1]["pixel_values"]
    assert torch.equal(ds[1]["pixel_values"], epoch0)
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["pixel_values"], epoch0)


# -- bad files ---------------------------------------------------------------------------------
def test_bad_files_are_substituted_and_reported_once(broken, caplog):
    ds = VideoClipDataset(broken, num_frames=2, transform=T.eval_transform(16))
    with caplog.at_level(logging.WARNING, logger="falv.data.dataset"):
        items = [ds[i] for i in range(len(ds))] + [ds[1], ds[4]]
    # index 1 (undecodable) -> 2, index 4 (missing) -> 5: the next entry that decodes
    assert [it["index"] for it in items] == [0, 2, 2, 3, 5, 5, 6, 7, 2, 5]
    assert torch.equal(items[1]["pixel_values"], items[2]["pixel_values"])
    assert sorted(Path(p).name for p in ds.failures) == ["bad.mp4", "gone.mp4"]
    assert ds.failures[broken[4].path].startswith("not_found")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "bad.mp4" in messages[0] and "gone.mp4" in messages[1]


def test_bad_files_do_not_stop_a_worker_epoch(broken):
    ds = VideoClipDataset(broken, num_frames=2, transform=T.eval_transform(16), on_error="skip")
    batches = run_epoch(ds, workers=2, epoch=0)
    got = torch.cat([b["index"] for b in batches]).tolist()
    assert got == [0, 2, 3, 5, 6, 7]  # the two bad items are dropped by collate
    assert ds[1] is None and ds[1] is None and ds[2]["index"] == 2  # also once known bad
    sub = VideoClipDataset(broken, num_frames=2, transform=T.eval_transform(16))
    assert sum(len(b["index"]) for b in run_epoch(sub, workers=2, epoch=0)) == len(broken)


def test_on_error_raise(broken):
    ds = VideoClipDataset(broken, num_frames=2, on_error="raise")
    with pytest.raises(VideoError) as info:
        ds[1]
    assert info.value.code in {"not_a_video", "corrupt"}


def test_check_filters_up_front(broken, caplog):
    with caplog.at_level(logging.WARNING):
        ds = VideoClipDataset(broken, num_frames=2, check="probe")
    assert len(ds) == 6 and all(e.duration for e in ds.source)
    assert sum("skipping 2 of 8 videos" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"num_frames": 0}, {"clip_sampling": "random"}, {"on_error": "ignore"}, {"frame_stride": 0}, {"check": "yes"}],
)
def test_bad_arguments(videos, kwargs):
    args = {"num_frames": 2, **kwargs}
    with pytest.raises(ConfigError):
        VideoClipDataset(load_source(videos), **args)


# -- in-memory frame cache -----------------------------------------------------------------
@pytest.mark.parametrize("train", [False, True])
def test_frame_cache_gives_the_same_items(videos, train):
    """Cached frames are the frames the decoder gives for the same timestamps (constant fps)."""
    plain = VideoClipDataset(videos, 5, None, train=train, seed=3)
    cached = VideoClipDataset(videos, 5, None, train=train, seed=3, cache_bytes=2**30)
    for epoch in range(2):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(plain)):
            assert torch.equal(plain[i]["pixel_values"], cached[i]["pixel_values"])
    assert len(cached._cache) == len(cached)


def test_frame_cache_budget_is_respected(videos, monkeypatch):
    one_video = FRAMES * 48 * 64 * 3
    ds = VideoClipDataset(videos, 4, None, cache_bytes=2 * one_video)
    for i in range(len(ds)):
        ds[i]
    assert len(ds._cache) == 2 and ds._cached_bytes <= 2 * one_video
    calls = []
    import falv.video as fv

    original = fv.read_frames
    monkeypatch.setattr(fv, "read_frames", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    ds[0], ds[5]
    assert calls == [ds.source.entries[5].path]  # the cached video is not decoded again


@pytest.mark.parametrize("cache_gb", [0.0, 1.0])
@pytest.mark.parametrize("sampling", ["uniform", "dense"])
def test_kinetics_time_start_and_end_bound_every_sampled_frame(videos, tmp_path, sampling, cache_gb):
    """A Kinetics row naming a full (untrimmed) video trains and validates on [time_start, time_end] only."""
    import shutil

    full = tmp_path / "videos"
    full.mkdir()
    shutil.copy(videos / "run" / "0.mp4", full / "AAAAAAAAAAA.mp4")  # 20 frames at 10 fps, frame i shows i
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("label,youtube_id,time_start,time_end,split\nrun,AAAAAAAAAAA,0.5,1.3,train\n")
    src = load_source(csv_path, root=full, split="train")
    assert (src[0].start, src[0].end) == (0.5, 1.3)
    kw = dict(clip_sampling=sampling, frame_stride=2, cache_bytes=int(cache_gb * 2**30))
    for train in (False, True):
        ds = VideoClipDataset(src, num_frames=4, train=train, **kw)
        for epoch in range(6 if train else 1):
            ds.set_epoch(epoch)
            assert all(5 <= i <= 12 for i in indices(ds[0]["pixel_values"])), (train, epoch)


@pytest.mark.parametrize(("workers", "forks"), [(0, None), (1, False), (2, False)])
def test_loader_workers_never_fork_this_process(workers, forks):
    # forking an xdist worker that ran torch/ONNX Runtime/Ray threads crashed it: loaders use
    # falv's decoding pool's start method (forkserver on Linux, spawn elsewhere)
    ctx = loader_context(workers)
    assert (ctx is None) if forks is None else (ctx.get_start_method() != "fork")
