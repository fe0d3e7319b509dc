"""Tests of the synthetic benchmark (falv.data.synth, falv synth).

The temporal classes are checked from decoded pixels: each class moves the way
its name says, the time-reversed video of a class moves like its partner, and
the partners' per-frame statistics (pooled over frames, order ignored) match.
"""

from __future__ import annotations

import colorsys
import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from falv.cli.synth import synth
from falv.data.synth import (
    APPEARANCE_CLASSES,
    LONG_RANGE_CLASSES,
    LONG_RANGE_PAIRS,
    SPLITS,
    TEMPORAL_CLASSES,
    TEMPORAL_PAIRS,
    SynthConfig,
    catalogue,
    generate,
    load_manifest,
    partner,
    plan,
    render_video,
    resolve_classes,
    sample_action,
    sample_actions,
    split_counts,
    trimmed_spec,
)
from falv.data.synth_render import COLOURS, object_tracks, track
from falv.errors import ConfigError

CANONICAL = {a for a, _ in TEMPORAL_PAIRS}


# ----------------------------------------------------------------------------- pixel measurements


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def chroma(frames: np.ndarray) -> np.ndarray:
    """max(R,G,B) - min(R,G,B): high on the saturated action objects, low on the dull background and distractors."""
    f = frames.astype(np.int16)
    return (f.max(-1) - f.min(-1)).astype(np.float32)


def object_mask(frames: np.ndarray) -> np.ndarray:
    return chroma(frames) > 75


def centroids(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = object_mask(frames)
    h, w = m.shape[1:]
    area = m.sum((1, 2)).astype(float)
    ys, xs = np.mgrid[0:h, 0:w]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (m * xs).sum((1, 2)) / area, (m * ys).sum((1, 2)) / area, area


def slope(y: np.ndarray) -> float:
    t = np.arange(len(y))
    ok = np.isfinite(y)
    return float(np.polyfit(t[ok], y[ok], 1)[0])


def angular_velocity(frames: np.ndarray) -> float:
    """Least-squares rotation rate (rad/frame, > 0 clockwise on screen) from brightness constancy.

    Rotation about c moves pixel p with velocity w * (-(p_y - c_y), p_x - c_x)
    (image y points down), so I_t = -w * g with g = -I_x r_y + I_y r_x.
    """
    c = chroma(frames)
    cx, cy, area = centroids(frames)
    h, w = c.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    num = den = 0.0
    for t in range(len(c) - 1):
        if not (np.isfinite(cx[t]) and area[t] > 4):
            continue
        i = 0.5 * (c[t] + c[t + 1])
        it = c[t + 1] - c[t]
        iy, ix = np.gradient(i)
        rx, ry = xs - cx[t], ys - cy[t]
        sel = rx**2 + ry**2 < area[t] / np.pi * 1.6**2
        g = (-ix * ry + iy * rx)[sel]
        num -= float((it[sel] * g).sum())
        den += float((g * g).sum())
    return num / max(den, 1e-9)


def motion_statistic(label: str, frames: np.ndarray) -> float:
    """A number whose sign tells a temporal class from its partner: > 0 for the canonical class."""
    cx, cy, area = centroids(frames)
    if label in ("move_right", "move_left"):
        return slope(cx)  # x moves right
    if label in ("approach", "recede"):
        return slope(area)  # grows
    if label in ("appear", "disappear"):
        return slope(np.clip(chroma(frames) - 45, 0, None).sum((1, 2)))  # fades in
    if label in ("rotate_clockwise", "rotate_counterclockwise"):
        return angular_velocity(frames)
    if label in ("speed_up", "slow_down"):  # acceleration along the displacement
        t = np.arange(len(cy))
        ok = np.isfinite(cy)
        return float(np.polyfit(t[ok], cy[ok], 2)[0] * (cy[ok][-1] - cy[ok][0]))
    raise KeyError(label)


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return [row for row in csv.reader(f)]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def temporal_set(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("synth") / "temporal"
    config = SynthConfig(mode="temporal", videos_per_class=3, seed=0, duration=(1.5, 2.0))
    return generate(root, config, workers=2)


@pytest.fixture(scope="module")
def mixed_set(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("synth") / "mixed"
    config = SynthConfig(
        mode="mixed", classes=8, videos_per_class=2, seed=5, num_frames=10, width=48, height=32,
        multilabel=4, max_labels=3, untrimmed=2, untrimmed_duration=(6.0, 8.0),
    )
    return generate(root, config, workers=2)


# ----------------------------------------------------------------------------- files and layout


def test_videos_are_real_h264(temporal_set) -> None:
    for video in temporal_set.videos:
        path = temporal_set.root / video.path
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert stream.codec_context.pix_fmt == "yuv420p"
            assert (stream.width, stream.height) == (64, 64)
            assert stream.average_rate == 12
            frames = [f for f in container.decode(video=0)]
        assert len(frames) == video.num_frames
        assert 18 <= video.num_frames <= 24  # 1.5-2 s at 12 fps


def test_encoder_processes_are_not_forked_from_this_process(tmp_path) -> None:
    # forking a process that runs torch/OpenMP threads crashed xdist workers (a segfault just
    # after the pool's workers exited): the encoders start like the decoders, so a script
    # without a main guard gets one clear error, and a guarded one works
    body = ("from falv.data.synth import SynthConfig, generate\n"
            "def run(out):\n"
            "    generate(out, SynthConfig(mode='temporal', videos_per_class=1, duration=(1.5, 2.0)), workers=2)\n"
            "    print('done')\n")
    unguarded = tmp_path / "unguarded.py"
    unguarded.write_text(body + f"run({str(tmp_path / 'a')!r})\n")
    result = subprocess.run([sys.executable, str(unguarded)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "__main__" in result.stderr and "RunError" in result.stderr
    guarded = tmp_path / "guarded.py"
    guarded.write_text(body + f"if __name__ == '__main__':\n    run({str(tmp_path / 'b')!r})\n")
    result = subprocess.run([sys.executable, str(guarded)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr[-2000:]


def test_decoded_pixels_are_the_rendered_scene(temporal_set) -> None:
    for video in temporal_set.videos[::5]:
        decoded = decode(temporal_set.root / video.path).astype(float)
        rendered = render_video(video.scene).astype(float)
        assert decoded.shape == rendered.shape
        assert np.abs(decoded - rendered).mean() < 4.0  # lossy, but the same picture


def test_layout_labels_and_folders(temporal_set) -> None:
    root = temporal_set.root
    assert (root / "labels.txt").read_text().splitlines() == list(TEMPORAL_CLASSES)
    on_disk = sorted(p.relative_to(root).as_posix() for p in (root / "videos").rglob("*.mp4"))
    assert on_disk == sorted(v.path for v in temporal_set.videos)
    for path in on_disk:
        _, label, name = path.split("/")
        assert name.startswith(label + "_")
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["format"] == "falv-synth" and manifest["seed"] == 0
    assert manifest["falv_version"]
    assert [c["name"] for c in manifest["classes"]] == list(TEMPORAL_CLASSES)
    assert all(c["partner"] == partner(c["name"]) for c in manifest["classes"])
    first = manifest["videos"][0]
    assert {"id", "path", "labels", "split", "num_frames", "fps", "duration", "scene"} <= set(first)
    assert not list(root.rglob("*.part"))


def test_splits_are_stratified_disjoint_and_cover_all_videos(temporal_set) -> None:
    root = temporal_set.root
    rows = {split: read_rows(root / f"{split}.csv") for split in SPLITS}
    seen: dict[str, str] = {}
    for split, split_rows in rows.items():
        for path, *labels in split_rows:
            assert path not in seen, f"{path} in {seen.get(path)} and {split}"
            seen[path] = split
            assert labels == [Path(path).parent.name]
            assert (root / path).is_file()
    assert sorted(seen) == sorted(v.path for v in temporal_set.videos)
    for label in TEMPORAL_CLASSES:
        per_split = [sum(r[1] == label for r in rows[s]) for s in SPLITS]
        assert per_split == split_counts(3, (0.7, 0.15, 0.15)) == [1, 1, 1]


@pytest.mark.parametrize(
    "n, fractions, expected",
    [
        (10, (0.7, 0.15, 0.15), [7, 2, 1]),
        (100, (0.7, 0.15, 0.15), [70, 15, 15]),
        (3, (0.7, 0.15, 0.15), [1, 1, 1]),
        (2, (0.7, 0.15, 0.15), [2, 0, 0]),
        (0, (0.7, 0.15, 0.15), [0, 0, 0]),
        (5, (1.0, 0.0, 0.0), [5, 0, 0]),
    ],
)
def test_split_counts_table(n: int, fractions: tuple[float, ...], expected: list[int]) -> None:
    assert split_counts(n, fractions) == expected


@given(
    n=st.integers(0, 500),
    weights=st.lists(st.integers(0, 10), min_size=3, max_size=3).filter(lambda w: sum(w) > 0),
)
def test_split_counts_properties(n: int, weights: list[int]) -> None:
    fractions = [w / sum(weights) for w in weights]
    counts = split_counts(n, fractions)
    assert sum(counts) == n and min(counts) >= 0
    nonempty = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(nonempty):
        assert all(counts[i] >= 1 for i in nonempty)
    assert all(counts[i] == 0 for i, f in enumerate(fractions) if f == 0)
    assert all(abs(c - n * f) <= 2 for c, f in zip(counts, fractions))


def test_load_manifest_round_trip(temporal_set) -> None:
    loaded = load_manifest(temporal_set.root)
    assert loaded.config == temporal_set.config
    assert loaded.classes == temporal_set.classes
    assert [v.to_dict() for v in loaded.videos] == [v.to_dict() for v in temporal_set.videos]


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_other_videos(tmp_path: Path) -> None:
    config = SynthConfig(mode="mixed", classes=4, videos_per_class=2, num_frames=8, seed=7, multilabel=1)
    a = generate(tmp_path / "a", config, workers=1)
    b = generate(tmp_path / "b", config, workers=2)  # the worker count must not matter
    c = generate(tmp_path / "c", SynthConfig(**{**config.to_dict(), "seed": 8}), workers=1)
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    for rel in files:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel
    assert (a.root / "manifest.json").read_text() != (c.root / "manifest.json").read_text()
    first = a.videos[0].path
    assert not np.array_equal(decode(a.root / first), decode(c.root / first))


def test_a_class_does_not_depend_on_the_other_classes() -> None:
    both = SynthConfig(classes=("move_left", "approach"), videos_per_class=2, seed=3)
    alone = SynthConfig(classes=("approach",), videos_per_class=2, seed=3)
    scenes = {v.id: v.scene for v in plan(both)}
    for v in plan(alone):
        assert scenes[v.id] == v.scene


# ----------------------------------------------------------------------------- temporal pairs


def test_temporal_classes_move_as_named_and_reversal_maps_to_partner(temporal_set) -> None:
    """From decoded pixels: class A has the sign of A, and A played backwards has the sign of its partner."""
    for video in temporal_set.videos:
        label = video.labels[0]
        frames = decode(temporal_set.root / video.path)
        forward = motion_statistic(label, frames)
        backward = motion_statistic(label, frames[::-1])
        expected = 1 if label in CANONICAL else -1
        assert np.sign(forward) == expected, (video.id, forward)
        assert np.sign(backward) == -expected, (video.id, backward)  # the partner's sign


@pytest.mark.parametrize("pair", TEMPORAL_PAIRS, ids=lambda p: p[0])
def test_partner_is_exactly_the_time_reversal(pair: tuple[str, str]) -> None:
    """Same random draws -> same object and motion except the direction of time; without
    nuisances the partner's frames are the canonical frames in reverse order."""
    config = SynthConfig(distractors=0, noise=0.0, jitter=0.0)
    canonical, other = pair
    objects = [
        sample_action(np.random.default_rng(42), label, TEMPORAL_CLASSES, (0, 20), (0, 0, 1, 1), config)
        for label in pair
    ]
    strip = [{k: copy.deepcopy(v) for k, v in o.items() if k != "label"} for o in objects]
    assert strip[0]["motion"].pop("reverse") is False and strip[1]["motion"].pop("reverse") is True
    assert strip[0] == strip[1]
    scene = {
        "width": 32, "height": 32, "fps": 12, "num_frames": 20,
        "background": {"kind": "gradient", "colour": [40, 40, 60], "colour2": [90, 80, 70], "direction": 1.0},
        "noise": {"std": 0.0, "jitter": 0.0, "seed": 0},
    }
    frames = {label: render_video({**scene, "objects": [obj]}) for label, obj in zip(pair, objects)}
    assert np.array_equal(frames[other], frames[canonical][::-1])
    assert not np.array_equal(frames[other], frames[canonical])


def _pooled(label: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame state of the action object pooled over all frames of n clips, and its first-frame values."""
    config = SynthConfig(videos_per_class=n, seed=11)
    key = {"move": "cx", "speed": "cy", "slow": "cy", "rotate": "angle", "approach": "scale", "recede": "scale"}
    name = key.get(label.split("_")[0], "alpha")
    pooled, first = [], []
    for i in range(n):
        (state,) = object_tracks(trimmed_spec(config, TEMPORAL_CLASSES, label, i).scene)
        values = np.mod(state[name], 2 * np.pi) if name == "angle" else state[name]
        pooled.append(values)
        first.append(values[0])
    return np.concatenate(pooled), np.array(first)


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


@pytest.mark.parametrize("pair", TEMPORAL_PAIRS, ids=lambda p: p[0])
def test_partners_have_the_same_bag_of_frames(pair: tuple[str, str]) -> None:
    """Positions/sizes/angles/opacities pooled over frames are distributed alike for both partners
    (a frame-level model that averages over frames is at chance), unlike e.g. the first frame."""
    a, a_first = _pooled(pair[0], 300)
    b, b_first = _pooled(pair[1], 300)
    assert _ks(a, b) < 0.12
    if pair[0] in ("move_right", "approach", "appear"):  # here the first frame alone does tell them apart
        assert _ks(a_first, b_first) > 0.5


def test_track_reverse_flag_reverses_every_state() -> None:
    motion = {"kind": "linear", "x": 0.2, "x_end": 0.8, "y": 0.5, "y_end": 0.3, "power": 2.0, "angle": 0.3}
    forward = track(motion, 15, 12)
    backward = track({**motion, "reverse": True}, 15, 12)
    for key in forward:
        np.testing.assert_allclose(backward[key], forward[key][::-1])


# ----------------------------------------------------------------------------- appearance, multi-label, untrimmed


def test_appearance_classes_show_their_colour(mixed_set) -> None:
    checked = 0
    for video in mixed_set.videos:
        label = video.labels[0]
        if video.kind != "trimmed" or partner(label):
            continue
        frames = decode(mixed_set.root / video.path)
        mask = object_mask(frames)
        assert mask.sum() > 0
        r, g, b = (frames[mask].astype(float) / 255).mean(0)
        hue = colorsys.rgb_to_hsv(r, g, b)[0] * 360
        target = COLOURS[label.split("-")[0]]
        assert min(abs(hue - target), 360 - abs(hue - target)) < 25, (video.id, hue)
        (obj,) = [o for o in video.scene["objects"] if o["role"] == "action"]
        assert "-".join([obj["colour_name"], obj["texture"], obj["shape"]]) == "-".join(label.split("-")[:3])
        checked += 1
    assert checked >= 4


def test_temporal_objects_never_look_like_an_appearance_class(mixed_set) -> None:
    appearance = {c for c in mixed_set.classes if not partner(c)}
    triples = {tuple(c.split("-")[:3]) for c in appearance}
    for video in mixed_set.videos:
        for obj in video.scene["objects"]:
            if obj["role"] == "action" and partner(obj["label"]):
                assert (obj["colour_name"], obj["texture"], obj["shape"]) not in triples


def test_multilabel_rows_have_several_labels(mixed_set) -> None:
    root = mixed_set.root
    classes = (root / "labels.txt").read_text().splitlines()
    rows = [row for s in SPLITS for row in read_rows(root / f"{s}.csv") if row[0].startswith("multilabel/")]
    assert len(rows) == 4
    for path, *labels in rows:
        assert 2 <= len(labels) <= 3 and len(set(labels)) == len(labels)
        assert set(labels) <= set(classes)
        assert (root / path).is_file()
        (video,) = [v for v in mixed_set.videos if v.path == path]
        assert [o["label"] for o in video.scene["objects"] if o["role"] == "action"] == labels
        assert len(decode(root / path)) == 10


def test_untrimmed_ground_truth(mixed_set) -> None:
    root = mixed_set.root
    gt = json.loads((root / "untrimmed" / "ground_truth.json").read_text())
    assert set(gt) >= {"version", "database"}
    assert len(gt["database"]) == 2
    assert {v["subset"] for v in gt["database"].values()} == {"validation", "testing"}
    table = read_rows(root / "untrimmed" / "segments.csv")
    assert table[0] == ["video_id", "path", "subset", "start", "end", "label"]
    assert len(table) - 1 == sum(len(v["annotations"]) for v in gt["database"].values())
    for video_id, entry in gt["database"].items():
        frames = decode(root / entry["path"])
        fps = entry["fps"]
        assert len(frames) == entry["num_frames"]
        assert entry["duration"] == pytest.approx(len(frames) / fps, abs=1e-4)
        assert 6.0 <= entry["duration"] <= 8.0
        segments = [a["segment"] for a in entry["annotations"]]
        assert segments, video_id
        assert all(0 <= s < e <= entry["duration"] for s, e in segments)
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(segments, segments[1:]))  # sorted, no overlap
        assert all(a["label"] in mixed_set.classes for a in entry["annotations"])
        # from pixels: no action object in the background between segments, one in each segment's middle
        area = object_mask(frames).sum((1, 2))
        inside = np.zeros(len(frames), bool)
        for s, e in segments:
            inside[round(s * fps) : round(e * fps)] = True
            assert area[round((s + e) / 2 * fps)] > 0
        assert area[~inside].max() == 0


# ----------------------------------------------------------------------------- config and CLI


def test_catalogues_and_class_selection() -> None:
    assert catalogue("temporal") == TEMPORAL_CLASSES and len(TEMPORAL_CLASSES) == 10
    assert catalogue("appearance") == APPEARANCE_CLASSES
    assert sorted(catalogue("mixed")) == sorted(TEMPORAL_CLASSES + APPEARANCE_CLASSES)
    assert resolve_classes(SynthConfig(classes=4)) == ["move_right", "move_left", "rotate_clockwise",
                                                       "rotate_counterclockwise"]
    assert resolve_classes(SynthConfig(mode="mixed", classes=4))[2:] == ["red-solid-circle", "red-solid-square"]
    assert resolve_classes(SynthConfig(mode="appearance", classes=["blue-striped-cross-on-gradient"])) == [
        "blue-striped-cross-on-gradient"
    ]
    assert all(partner(partner(c)) == c for c in TEMPORAL_CLASSES)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"width": 63}, "even"),
        ({"classes": ["red-solid-circle"]}, "temporal config"),
        ({"mode": "appearance", "classes": ["move_left"]}, "appearance config"),
        ({"mode": "appearance", "classes": ["red-solid-blob"]}, "unknown shape"),
        ({"classes": ["nope"]}, "unknown class"),
        ({"classes": 11}, "1 to 10"),
        ({"mode": "nope"}, "unknown synth config"),
        ({"splits": (0.5, 0.5, 0.5)}, "sum"),
        ({"untrimmed": 1, "untrimmed_duration": (6.0, 8.0)}, "too short"),
        ({"classes": 1, "multilabel": 1}, "at least two classes"),
        (
            {"mode": "appearance", "classes": ["red-solid-circle"] + [f"red-solid-circle-on-{b}" for b in
                                                                     ("plain", "gradient", "texture")]},
            "no background left",
        ),
    ],
)
def test_invalid_configs_raise_config_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_classes(SynthConfig(**kwargs))


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    config = SynthConfig(classes=2, videos_per_class=1, num_frames=4)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        generate(tmp_path / "other", config, workers=1)
    with pytest.raises(ConfigError, match="no falv synth manifest"):
        generate(tmp_path / "other", config, workers=1, overwrite=True)
    generate(tmp_path / "out", config, workers=1)
    with pytest.raises(ConfigError, match="--overwrite"):
        generate(tmp_path / "out", config, workers=1)
    again = generate(tmp_path / "out", SynthConfig(classes=1, videos_per_class=1, num_frames=4), overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out" / "videos").iterdir()) == ["move_right"]
    assert len(again.videos) == 1


def test_cli_writes_the_layout(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = [str(out), "--config", "temporal", "--classes", "move_left,move_right", "--videos-per-class", "3",
            "--seed", "4", "--size", "32x48", "--fps", "10", "--frames", "6", "--untrimmed", "1",
            "--untrimmed-duration", "6", "--multilabel", "2", "-j", "1", "-q"]
    result = CliRunner().invoke(synth, args)
    assert result.exit_code == 0, result.output
    assert "wrote 6 clips of 2 temporal classes, 2 multilabel, 1 untrimmed" in result.output
    assert (out / "labels.txt").read_text() == "move_left\nmove_right\n"
    for name in ("train.csv", "val.csv", "test.csv", "manifest.json", "untrimmed/ground_truth.json",
                 "untrimmed/segments.csv"):
        assert (out / name).is_file(), name
    assert len(list((out / "videos" / "move_left").glob("*.mp4"))) == 3
    with av.open(str(next((out / "videos" / "move_right").glob("*.mp4")))) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.average_rate) == (32, 48, 10)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 4 and manifest["config"]["num_frames"] == 6


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from falv.cli.main import EXIT_ERROR, EXIT_USAGE, main

    with pytest.raises(SystemExit) as exc:
        main(["synth", str(tmp_path / "x"), "--classes", "walk"])
    assert exc.value.code == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: unknown class 'walk'") and "\n" not in err
    with pytest.raises(SystemExit) as exc:
        main(["synth", str(tmp_path / "x"), "--size", "big"])
    assert exc.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--list-classes", "--config", "temporal"])
    assert exc.value.code == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[1] == "move_left\t(reverse of move_right)"


@pytest.mark.parametrize("pair", LONG_RANGE_PAIRS, ids=lambda p: p[0])
def test_long_range_partner_is_exactly_the_time_reversal(pair: tuple[str, str]) -> None:
    """The long-range pairs are made like the temporal ones: same draws, time played backwards."""
    config = SynthConfig(mode="longrange", distractors=0, noise=0.0, jitter=0.0)
    objects = {label: sample_actions(np.random.default_rng(7), label, LONG_RANGE_CLASSES, (0, 24), (0, 0, 1, 1),
                                     config) for label in pair}
    a, b = (objects[label] for label in pair)
    assert len(a) == len(b) == (2 if pair[0] == "a_then_b" else 1)
    scene = {
        "width": 32, "height": 32, "fps": 12, "num_frames": 24,
        "background": {"kind": "plain", "colour": [40, 40, 60]},
        "noise": {"std": 0.0, "jitter": 0.0, "seed": 0},
    }
    frames = {label: render_video({**scene, "objects": objs}) for label, objs in objects.items()}
    assert np.array_equal(frames[pair[1]], frames[pair[0]][::-1])
    assert not np.array_equal(frames[pair[1]], frames[pair[0]])


def test_long_range_events_are_several_frames_apart() -> None:
    """a_then_b: marker A is gone well before B shows (its window ends >= 10 % of the clip
    earlier); grow_then_shrink: one whole cycle, largest in the first half, smallest in the second."""
    config = SynthConfig(mode="longrange", videos_per_class=40, seed=3)
    for i in range(40):
        spec = trimmed_spec(config, LONG_RANGE_CLASSES, "a_then_b", i)
        first, second = object_tracks(spec.scene)
        shown_a, shown_b = np.flatnonzero(first["alpha"] > 0), np.flatnonzero(second["alpha"] > 0)
        assert shown_b.min() - shown_a.max() >= max(2, 0.1 * (spec.num_frames - 1))
        assert [o["shape"] for o in spec.scene["objects"] if o["role"] == "action"] == ["square", "circle"]
        (size,) = object_tracks(trimmed_spec(config, LONG_RANGE_CLASSES, "grow_then_shrink", i).scene)
        half = len(size["scale"]) // 2
        assert size["scale"].argmax() < half <= size["scale"].argmin()
        assert size["scale"][0] == pytest.approx(size["scale"][-1])
    assert catalogue("longrange") == LONG_RANGE_CLASSES
    assert all(partner(a) == b and partner(b) == a for a, b in LONG_RANGE_PAIRS)
