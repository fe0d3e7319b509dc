"""Reports: training curves from a run's ``log.jsonl`` and one self-contained HTML page
for a labelling run, an evaluation and a training run.

Matplotlib and Pillow (the ``plots`` extra) are imported only when a picture is drawn::

    from falv.report import plot_training, write_report
    plot_training("runs/a/log.jsonl", "runs/a/plots")       # loss.png, accuracy.png, lr.png
    write_report("report.html", labels_dir="labels/", eval_dir="eval/", run_dir="runs/a")
"""

from __future__ import annotations

from falv._lazy import lazy_exports
from falv.errors import FalvError


class ReportError(FalvError):
    """A report cannot be made (no input found, unreadable file, missing optional dependency)."""


_LAZY = {
    "plot_training": "falv.report.plots",
    "read_log": "falv.report.plots",
    "write_report": "falv.report.html",
    "build_report": "falv.report.html",
}

__all__ = ["ReportError", *_LAZY]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
