"""The HTML report: valid, self-contained, escaped, and robust to missing videos."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from falv.cli import main as cli_main
from falv.cli.report import report
from falv.report import ReportError
from falv.report.html import build_report, write_report

from .conftest import EVIL

VOID = {"meta", "img", "br", "hr", "input", "link"}


class Checker(HTMLParser):
    """Collects tags and URL attributes and checks that elements nest properly."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.urls: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "poster", "srcset") or (value or "").startswith(("http", "//")):
                self.urls.append((tag, name, value or ""))
            if name.startswith("on"):
                self.problems.append(f"event handler {name} on <{tag}>")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href"):
                self.urls.append((tag, name, value or ""))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> Checker:
    checker = Checker()
    checker.feed(text)
    checker.close()
    assert not checker.problems, checker.problems[:5]
    assert not checker.stack, checker.stack
    return checker


def assert_self_contained(text: str, page: Checker) -> None:
    assert "http://" not in text and "https://" not in text
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for tag, name, value in page.urls:
        if name == "href":
            assert value.startswith("#"), (tag, value)
        else:
            assert value.startswith("data:image/"), (tag, name, value[:40])


def test_full_report(labels_dir, eval_dir, run_dir, tmp_path):
    out = write_report(tmp_path / "r" / "report.html", labels_dir=labels_dir, eval_dir=eval_dir, run_dir=run_dir,
                       title=f"run {EVIL}")
    assert out == tmp_path / "r" / "report.html"
    text = out.read_text(encoding="utf-8")
    page = parse(text)
    assert_self_contained(text, page)
    # the hostile label, class name, message and title are text, never markup
    assert "<script" not in text.lower()
    assert "&lt;script&gt;" in text
    assert EVIL in "".join(page.text)
    for anchor in ("labels", "evaluation", "training"):
        assert f'id="{anchor}"' in text and f'href="#{anchor}"' in text
    images = [v for _, name, v in page.urls if name == "src"]
    assert any(v.startswith("data:image/jpeg;base64,") for v in images)  # the thumbnail of good.mp4
    assert sum(v.startswith("data:image/png;base64,") for v in images) >= 4  # confusion matrix + 3 curves


def test_labels_section(labels_dir):
    text = build_report(labels_dir=labels_dir)
    page = parse(text)
    assert_self_contained(text, page)
    body = "".join(page.text)
    assert "3 videos: 2 labelled, 1 failed" in body
    assert text.count("no preview") == 1  # gone.mp4 has a placeholder, good.mp4 a thumbnail
    assert "good.mp4" in body and "gone.mp4" in body
    assert "moov atom not found" in body and "corrupt" in body
    assert text.count('<svg class="timeline"') == 2  # segments for good.mp4, windows for gone.mp4
    assert "segments" in body and "top label per window" in body
    assert re.search(r"stir: 0\.00-1\.00 s, score 0\.800", body)


def test_labels_without_thumbnails_or_cards(labels_dir):
    text = build_report(labels_dir=labels_dir / "labels.jsonl", thumbnails=False, max_videos=1)
    assert "data:image/jpeg" not in text
    assert "video cards: the first 1 of 2 labelled videos" in text


def test_evaluation_section(eval_dir):
    text = build_report(eval_dir=eval_dir)
    page = parse(text)
    assert_self_contained(text, page)
    png = base64.b64encode((eval_dir / "confusion_matrix.png").read_bytes()).decode()
    assert f"data:image/png;base64,{png}" in text
    body = "".join(page.text)
    for expected in ("top-1 accuracy", "0.7500", "F1 (macro)", "mAP@0.5", "x.mp4: not a video file",
                     "precision", "0.8570", "failed videos"):
        assert expected in body, expected
    assert "AP" in body and "0.9000" in body  # per-class AP joined to per_class.csv


def test_confusion_matrix_table_when_there_is_no_picture(eval_dir):
    (eval_dir / "confusion_matrix.png").unlink()
    text = build_report(eval_dir=eval_dir)
    parse(text)
    assert "data:image/png" not in text
    assert "Confusion matrix" in text and "rgba(30,136,229" in text


def test_training_section_draws_curves_from_the_log(run_dir):
    text = build_report(run_dir=run_dir)
    page = parse(text)
    assert_self_contained(text, page)
    assert [alt for alt in re.findall(r'<img class="plot" src="data:image/png;base64,[^"]+" alt="([^"]+)"', text)] \
        == ["loss", "accuracy", "lr"]
    assert "best epoch 2" in text and "val_top1 = 0.7500" in text
    assert "training configuration" in text


def test_training_section_uses_existing_plots(run_dir):
    from falv.report.plots import plot_training

    plot_training(run_dir / "log.jsonl", run_dir / "plots")
    (run_dir / "log.jsonl").unlink()
    text = build_report(run_dir=run_dir)
    assert text.count('<img class="plot"') == 3


def test_errors(tmp_path):
    with pytest.raises(ReportError, match="nothing to report"):
        build_report()
    with pytest.raises(ReportError, match="labels.jsonl"):
        build_report(labels_dir=tmp_path)
    with pytest.raises(ReportError, match="metrics.json"):
        build_report(eval_dir=tmp_path)
    with pytest.raises(ReportError, match="log.jsonl"):
        build_report(run_dir=tmp_path)


def test_cli(labels_dir, eval_dir, run_dir, tmp_path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(report, ["--labels", str(labels_dir), "--eval", str(eval_dir), "--run", str(run_dir),
                                         "--out", str(out), "--title", "Nightly"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {out}"
    assert "<title>Nightly</title>" in out.read_text(encoding="utf-8")
    nothing = CliRunner().invoke(report, ["--out", str(out)])
    assert nothing.exit_code == 2 and "--labels" in nothing.output


def test_cli_error_is_one_line_with_exit_code_3(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(cli_main.COMMANDS, "report", "falv.cli.report:report")
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["report", "--eval", str(tmp_path), "--out", str(tmp_path / "r.html")])
    _, err = capsys.readouterr()
    assert exit_info.value.code == 3
    assert err.startswith("Error: ") and err.strip().count("\n") == 0 and "metrics.json" in err
    assert not (tmp_path / "r.html").exists()
