"""Hierarchical labels: taxonomy files, consistent scores, the loss over every level, and
--level / --max-depth through training, evaluation, labeling and serving (issue 18)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from falv.errors import ConfigError
from falv.evaluation.metrics import hierarchical_metrics
from falv.taxonomy import Taxonomy, hierarchical_loss, read_taxonomy

# an uneven tree: "news" is a leaf one deep, the sports leaves are three deep
LEAVES = ("sports/ball/soccer", "sports/ball/tennis", "sports/water/swimming", "news")


def tree() -> Taxonomy:
    return Taxonomy(LEAVES)


# -- files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, text", [
    ("paths.txt", "# leaves and an inner node, in any order\nsports/ball/soccer\nsports/ball\n\n"
                  "sports/ball/tennis\nsports/water/swimming\nnews\n"),
    ("pairs.csv", "sports,ball\nball,soccer\nball,tennis\nsports,water\nwater,swimming\nnews,\n"),
    ("pairs.tsv", "sports\tball\nball\tsoccer\nball\ttennis\nsports\twater\nwater\tswimming\n"),
    ("tree.json", json.dumps({"ball": "sports", "soccer": "ball", "tennis": "ball", "water": "sports",
                              "swimming": "water"})),
    ("paths.json", json.dumps(list(LEAVES))),
    ("pairs.json", json.dumps([["sports", "ball"], ["ball", "soccer"], ["ball", "tennis"], ["sports", "water"],
                               ["water", "swimming"]])),
])
def test_taxonomy_files_in_every_documented_form(tmp_path, name, text):
    path = tmp_path / name
    if name == "pairs.csv":  # a root leaf cannot be a pair: leave it out of the pair forms
        text = text.replace("news,\n", "")
    path.write_text(text)
    taxonomy = read_taxonomy(path)
    expected = set(LEAVES) if "news" in text else set(LEAVES) - {"news"}
    assert set(taxonomy.leaves) == expected
    assert taxonomy.resolve("soccer") == "sports/ball/soccer"
    assert taxonomy.resolve("ball") == "sports/ball"


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("a,b\nc,b\n", "two parents"),
    ("a,b\nb,a\n", "cycle"),
    ("a,a\n", "its own parent"),
    ("a,b,c\n", "not 'parent,child'"),
    ("a//b\n", "not a taxonomy path"),
    ("a/b\na/b\n", None),  # a repeated path is one path
])
def test_bad_taxonomy_files_say_why(tmp_path, text, message):
    path = tmp_path / "t.txt"
    path.write_text(text)
    if message is None:
        assert read_taxonomy(path).leaves == ("a/b",)
        return
    with pytest.raises(ConfigError, match=message):
        read_taxonomy(path)


def test_a_leaf_cannot_also_be_a_parent_and_labels_must_resolve():
    with pytest.raises(ConfigError, match="both a leaf and the parent"):
        Taxonomy(("a/b", "a"))
    t = Taxonomy(("x/other", "y/other", "y/z"))
    with pytest.raises(ConfigError, match="names 2 nodes"):
        t.resolve("other")
    with pytest.raises(ConfigError, match="not in the taxonomy"):
        t.resolve("nope")
    assert t.resolve("y/other") == "y/other" and t.resolve("z") == "y/z"


# -- structure and views --------------------------------------------------------------------------


def test_nodes_put_the_leaves_first_then_inner_nodes_shallowest_first():
    t = tree()
    assert t.nodes[:4] == LEAVES
    assert t.nodes[4:] == ("sports", "sports/ball", "sports/water")
    assert t.max_depth == 3 and t.depth("news") == 1
    m = t.membership()
    assert m[t.index("sports")].tolist() == [1, 1, 1, 0]
    assert m[t.index("sports/ball")].tolist() == [1, 1, 0, 0]
    w = t.level_weights()
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert w[t.index("sports/ball/soccer"), t.index("sports")] == pytest.approx(1 / 3)


@pytest.mark.parametrize("level, max_depth, names, sums", [
    (None, None, list(LEAVES), [1, 1, 1, 1]),
    (1, None, ["sports", "news"], [[1, 0], [1, 0], [1, 0], [0, 1]]),
    (2, None, ["sports/ball", "sports/water"], [[1, 0], [1, 0], [0, 1], [0, 0]]),  # news has no level 2
    (None, 2, ["sports/ball", "sports/water", "news"], [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]),
    (2, 3, ["sports/ball", "sports/water"], None),
])
def test_views_of_an_uneven_tree(level, max_depth, names, sums):
    got, matrix = tree().view(level, max_depth)
    assert got == names
    if sums is not None and level is None and max_depth is None:
        np.testing.assert_array_equal(matrix, np.eye(4))
    elif sums is not None:
        np.testing.assert_array_equal(matrix, np.array(sums))


@pytest.mark.parametrize("level, max_depth", [(4, None), (3, 2), (0, None)])
def test_impossible_views_are_config_errors(level, max_depth):
    with pytest.raises(ConfigError):
        tree().view(level, max_depth)


def test_best_path_is_consistent_for_random_scores():
    t, rng = tree(), np.random.default_rng(0)
    for _ in range(200):
        scores = rng.dirichlet(np.ones(4))
        path = t.best_path(scores)
        values = [s for _, s in path]
        assert all(a >= b - 1e-12 for a, b in zip(values, values[1:]))  # a child never above its parent
        assert [n for n, _ in path] == t.ancestors(path[-1][0])  # a chain from the top
        assert path[-1][0] in t.leaves
        for depth in (1, 2):  # cut at a depth: a prefix of the full path
            assert t.best_path(scores, depth) == path[:depth]
    # the path follows the summed scores, not the best single leaf
    assert [n for n, _ in t.best_path([0.3, 0.3, 0.0, 0.4])] == ["sports", "sports/ball", "sports/ball/soccer"]


# -- the loss --------------------------------------------------------------------------------------


def test_hierarchical_loss_is_cross_entropy_on_a_flat_tree_and_averages_the_levels():
    flat = Taxonomy(("a", "b", "c"))
    logits = torch.randn(5, 3)
    labels = torch.tensor([0, 1, 2, 1, 0])
    targets = torch.nn.functional.one_hot(labels, 3).float()
    m, w = torch.from_numpy(flat.membership()), torch.from_numpy(flat.level_weights())
    torch.testing.assert_close(hierarchical_loss(logits, targets, m, w),
                               torch.nn.functional.cross_entropy(logits, labels))
    t = tree()
    m, w = torch.from_numpy(t.membership()), torch.from_numpy(t.level_weights())
    z = torch.tensor([[1.0, 0.5, -1.0, 0.2]])
    p = torch.softmax(z, -1)[0]

    def target(node):
        return torch.nn.functional.one_hot(torch.tensor([t.index(node)]), t.num_nodes).float()

    expected = -(torch.log(p[:3].sum()) + torch.log(p[:2].sum()) + torch.log(p[0])) / 3
    torch.testing.assert_close(hierarchical_loss(z, target("sports/ball/soccer"), m, w), expected)
    # labelled at an inner node: only the levels down to it count
    expected = -(torch.log(p[:3].sum()) + torch.log(p[:2].sum())) / 2
    torch.testing.assert_close(hierarchical_loss(z, target("sports/ball"), m, w), expected)
    # linear in the targets, as mixup needs
    mix = 0.3 * target("news") + 0.7 * target("sports/water")
    torch.testing.assert_close(hierarchical_loss(z, mix, m, w),
                               0.3 * hierarchical_loss(z, target("news"), m, w)
                               + 0.7 * hierarchical_loss(z, target("sports/water"), m, w))


def test_objective_counts_a_leaf_under_the_labelled_node_as_right():
    from falv.training.mixing import Objective

    t = tree()
    objective = Objective(4, False, t)
    logits = torch.tensor([[5.0, 0, 0, 0], [5.0, 0, 0, 0], [0, 0, 5.0, 0], [0, 0, 0, 5.0]])
    labels = torch.tensor([t.index("sports/ball"), t.index("sports/ball/tennis"), t.index("sports/ball"),
                           t.index("news")])
    assert objective.correct(logits, labels) == 2
    assert objective.targets(labels).shape == (4, t.num_nodes)


# -- metrics ---------------------------------------------------------------------------------------


def test_hierarchical_metrics_by_hand():
    t = tree()
    scores = np.array([
        [0.7, 0.1, 0.1, 0.1],   # soccer, labelled soccer: path of 3 right
        [0.1, 0.6, 0.2, 0.1],   # tennis, labelled soccer: sports and ball right (2 of 3)
        [0.1, 0.1, 0.1, 0.7],   # news, labelled swimming: nothing right
        [0.5, 0.1, 0.3, 0.1],   # soccer, labelled sports/water (inner): sports right (1 of 2 true)
    ])
    nodes = ["sports/ball/soccer", "sports/ball/soccer", "sports/water/swimming", "sports/water"]
    out = hierarchical_metrics(scores, nodes, t)
    # predicted path sizes 3 + 3 + 1 + 3 = 10, true 3 + 3 + 3 + 2 = 11, overlap 3 + 2 + 0 + 1 = 6
    assert out["hierarchical_precision"] == pytest.approx(6 / 10)
    assert out["hierarchical_recall"] == pytest.approx(6 / 11)
    assert out["hierarchical_f1"] == pytest.approx(2 * 0.6 * (6 / 11) / (0.6 + 6 / 11))
    levels = {x["level"]: x for x in out["levels"]}
    assert levels[1]["num_videos"] == 4 and levels[1]["top1"] == pytest.approx(3 / 4)
    assert levels[2]["num_videos"] == 4 and levels[2]["top1"] == pytest.approx(2 / 4)
    assert levels[3]["num_videos"] == 3 and levels[3]["top1"] == pytest.approx(1 / 3)


# -- config ----------------------------------------------------------------------------------------


def test_a_hierarchical_config_round_trips_and_checks_its_labels(tmp_path):
    from falv import FALConfig

    config = FALConfig(id2label=dict(enumerate(LEAVES)), hierarchical=True)
    config.save_pretrained(tmp_path)
    again = FALConfig.from_pretrained(tmp_path)
    assert again.hierarchical and again.taxonomy.leaves == LEAVES
    assert "hierarchical" not in FALConfig().to_dict()  # flat configs stay as they were
    with pytest.raises(ConfigError, match="both a leaf and the parent"):
        FALConfig(id2label={0: "a", 1: "a/b"}, hierarchical=True)
    with pytest.raises(ConfigError, match="single-label"):
        FALConfig(id2label=dict(enumerate(LEAVES)), hierarchical=True, problem_type="multi_label_classification")
    assert config.with_labels(["x", "y"]).hierarchical is False


# -- end to end: train with coarse labels, evaluate, label, serve ------------------------------------

CLASSES = ("red-solid-circle", "blue-solid-circle", "red-solid-square", "green-striped-cross")
SMALL = dict(num_frames=4, image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
             num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A synth set of four appearance classes in a three-level taxonomy, trained hierarchically
    with a third of the training videos labelled only with their parent."""
    from falv.data.synth import SynthConfig, generate
    from falv.training import TrainConfig, train

    root = tmp_path_factory.mktemp("hier")
    data = root / "data"
    generate(data, SynthConfig(mode="appearance", classes=CLASSES, videos_per_class=6, seed=5, width=32, height=32,
                               splits=(0.5, 0.17, 0.33), duration=(1.0, 1.5), distractors=0, noise=0.0),
             overwrite=True)
    taxonomy = read_taxonomy(data / "taxonomy.txt")
    assert set(taxonomy.leaves) == {"appearance/circle/red-solid-circle", "appearance/circle/blue-solid-circle",
                                    "appearance/square/red-solid-square", "appearance/cross/green-striped-cross"}
    lists = root / "lists"
    lists.mkdir()
    rows = list(csv.reader((data / "train.csv").open()))
    coarse = [[str(data / p), taxonomy.resolve(lab).rsplit("/", 1)[0] if i % 3 == 0 else lab]
              for i, (p, lab) in enumerate(rows)]
    assert any(label.count("/") == 1 for _, label in coarse)  # some videos are labelled at a parent only
    with (lists / "train.csv").open("w", newline="") as f:
        csv.writer(f).writerows(coarse)
    result = train(TrainConfig(data=str(lists / "train.csv"), val=str(data), val_split="val", out=str(root / "run"),
                               epochs=2, batch_size=4, taxonomy=str(data / "taxonomy.txt"), model_overrides=SMALL,
                               workers=0), echo=None)
    return data, result.best_dir


def test_training_with_a_taxonomy_makes_a_hierarchical_model(trained):
    from falv import FALForVideoClassification

    data, best = trained
    model = FALForVideoClassification.from_pretrained(best)
    assert model.config.hierarchical
    assert set(model.config.labels) == set(read_taxonomy(data / "taxonomy.txt").leaves)
    split = json.loads((best.parent / "split.json").read_text())
    assert split["how"]["taxonomy"]["leaves"] == model.config.labels


def test_a_label_outside_the_taxonomy_is_a_dataset_error(trained, tmp_path):
    from falv.data.sources import DatasetError
    from falv.training import TrainConfig, train

    data, _ = trained
    bad = tmp_path / "lists"
    bad.mkdir()
    first = next(csv.reader((data / "train.csv").open()))
    (bad / "train.csv").write_text(f"{data / first[0]},appearance/hexagon\n{data / first[0]},{first[1]}\n")
    with pytest.raises(DatasetError, match="not in the taxonomy"):
        train(TrainConfig(data=str(bad / "train.csv"), val=str(data), val_split="val", out=str(tmp_path / "r"),
                          epochs=1, taxonomy=str(data / "taxonomy.txt"), model_overrides=SMALL), echo=None)


def test_evaluate_reports_every_level_and_judges_a_chosen_one(trained, tmp_path):
    from falv.evaluation import evaluate

    data, best = trained
    leaves = evaluate(str(best), str(data), tmp_path / "leaves", workers=1)
    levels = [x["level"] for x in leaves["hierarchy"]["levels"]]
    assert levels == [1, 2, 3]
    assert leaves["hierarchy"]["levels"][0]["top1"] == 1.0  # one top node: every video is "appearance"
    assert leaves["num_model_classes"] == 4
    assert leaves["hierarchy"]["levels"][2]["top1"] == pytest.approx(leaves["top1"])
    shapes = evaluate(str(best), str(data), tmp_path / "shapes", workers=1, level=2)
    assert shapes["num_model_classes"] == 3
    assert set(shapes["per_class"]) <= {"appearance/circle", "appearance/square", "appearance/cross"}
    assert shapes["top1"] == pytest.approx(shapes["hierarchy"]["levels"][1]["top1"])
    assert 0 <= shapes["hierarchy"]["hierarchical_precision"] <= 1


def test_label_reports_a_level_and_the_path(trained, tmp_path):
    from falv.cli.main import cli

    data, best = trained
    videos = data / "videos" / "red-solid-circle"
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["label", str(videos), "-m", str(best), "-o", str(out), "-q", "--level", "2",
                                      "--format", "jsonl,labelstudio,csv,activitynet,webvtt"])
    assert result.exit_code == 0, result.output
    # every export lists the level's classes (Label Studio's config names each one)
    config = (out / "label_studio_config.xml").read_text()
    assert all(f'value="{shape}"' in config for shape in ("appearance/circle", "appearance/square"))
    for line in (out / "labels.jsonl").read_text().splitlines():
        record = json.loads(line)
        names = [x["label"] for x in record["labels"]]
        assert set(names) <= {"appearance/circle", "appearance/square", "appearance/cross"}
        assert math.isclose(sum(x["score"] for x in record["labels"]), 1.0, rel_tol=1e-4)
        path = record["label_path"]
        assert [x["label"] for x in path][0] == "appearance" and len(path) == 2
        assert path[-1]["label"] == record["labels"][0]["label"]  # the path ends at the level's best node
        assert path[-1]["score"] == pytest.approx(record["labels"][0]["score"], abs=1e-5)
        assert all(a["score"] >= b["score"] - 1e-6 for a, b in zip(path, path[1:]))
    full = CliRunner().invoke(cli, ["label", str(videos), "-m", str(best), "-o", str(tmp_path / "leaf"), "-q"])
    assert full.exit_code == 0, full.output
    record = json.loads((tmp_path / "leaf" / "labels.jsonl").read_text().splitlines()[0])
    assert len(record["label_path"]) == 3 and record["label_path"][-1]["label"].count("/") == 2


def test_levels_on_a_flat_model_or_below_the_leaves_are_clear_errors(trained, tmp_path, capsys):
    from falv import FALForVideoClassification
    from falv.cli.main import main

    data, best = trained
    flat = tmp_path / "flat"
    model = FALForVideoClassification.from_pretrained(best)
    model.config.hierarchical = False
    model.save_pretrained(flat)
    video = str(next((data / "videos").rglob("*.mp4")))
    for model_dir, args, message in ((flat, ["--level", "1"], "need a hierarchical model"),
                                     (best, ["--level", "4"], "below the taxonomy's leaves")):
        with pytest.raises(SystemExit) as exit_:
            main(["label", video, "-m", str(model_dir), "-o", str(tmp_path / "o"), "-q", *args])
        err = capsys.readouterr().err
        assert exit_.value.code == 3 and message in err and "Traceback" not in err


def test_serve_jobs_take_a_level_the_model_has(trained, tmp_path):
    from falv.serve.service import LabelService, ServeSettings, job_options

    data, best = trained
    video = next((data / "videos").rglob("*.mp4"))
    service = LabelService(ServeSettings(model=str(best), data_dir=tmp_path / "serve"))
    options = job_options({"level": "2"})
    assert options == {"level": 2}
    job = service.submit(video, video.name, options)
    assert job.options == {"level": 2}
    with pytest.raises(ConfigError, match="below the taxonomy's leaves"):
        service.submit(video, video.name, job_options({"level": 5}))
    with pytest.raises(ConfigError, match="must be an integer"):
        job_options({"max_depth": 1.5})


def test_stream_windows_and_segments_use_the_level(trained):
    from falv.labeling.stream import label_stream

    data, best = trained
    video = str(next((data / "videos" / "green-striped-cross").glob("*.mp4")))
    events = list(label_stream(video, str(best), window=0.5, timeout=0.5, max_lag=None, level=2,
                                background_threshold=0.0))
    shapes = {"appearance/circle", "appearance/square", "appearance/cross"}
    windows = [e for e in events if e["type"] == "window"]
    assert windows and all({x["label"] for x in e["labels"]} <= shapes for e in windows)
    assert all(e["label"] in shapes for e in events if e["type"] == "segment")
    with pytest.raises(ConfigError, match="below the taxonomy's leaves"):
        next(iter(label_stream(video, str(best), window=0.5, timeout=0.5, max_depth=7, level=5)))
