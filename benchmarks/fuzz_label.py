"""Fuzz ``falv label`` with damaged videos: the promise "a broken file never stops the run".

Mutants of the suite's own small videos (every container and codec it writes; see
:mod:`falv.video.mutate` for the eight mutations) are labelled in folders of
``--batch`` files by the real command, ``falv label FOLDER --model M --out DIR``, with
every export format. Unmutated controls go last in every folder. For every batch:

- the command ends by itself (no hang) with exit code 0 or 1 (no abort);
- nothing on stderr looks like a traceback or an internal error of the whole run;
- ``labels.jsonl`` holds exactly one record per input, each with labels or a typed
  error (``internal`` counts separately: an exception nobody foresaw);
- the controls after the mutants are labelled (the decoder pool survived).

    python benchmarks/fuzz_label.py --mutants 5000 --out runs/fuzz          # the campaign
    python benchmarks/fuzz_label.py --quick                                 # 48 mutants

The summary (JSON, ``--out``/summary.json) counts outcomes per mutation and error type;
mutants that produced an ``internal`` error, an abort or a missing record are copied to
``--out``/found/ so they can become regression fixtures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FORMATS = "jsonl,csv,label-studio,fiftyone,activitynet,webvtt"
CONTROLS = ("h264.mp4", "vp9.webm", "mpeg4.avi")


def make_model(folder: Path) -> Path:
    """A tiny falv model with random weights (what it answers does not matter here)."""
    import torch

    from falv import FALForVideoClassification, preset

    torch.manual_seed(0)
    FALForVideoClassification(preset("tiny", id2label={0: "a", 1: "b", 2: "c"})).save_pretrained(folder)
    return folder


def known_error_types() -> set[str]:
    from falv.video.errors import ERROR_CODES

    return set(ERROR_CODES) | {"internal", "non_finite_scores"}


def run_batch(folder: Path, out: Path, model: Path, *, timeout: float, decode_timeout: float,
              workers: int) -> dict[str, Any]:
    """``falv label`` over one folder; what happened (exit code, hang, stderr, records by path)."""
    cmd = [sys.executable, "-m", "falv", "label", str(folder), "--model", str(model), "--out", str(out),
           "--format", FORMATS, "--timeout", str(decode_timeout), "--workers", str(workers)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("FALV_DEBUG", None)
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        code, stderr, hung = proc.returncode, proc.stderr, False
    except subprocess.TimeoutExpired as exc:
        code, hung = None, True
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    records: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    labels = out / "labels.jsonl"
    if labels.exists():
        for line in labels.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                records[os.path.realpath(record["path"])].append(record)
    return {"exit_code": code, "hung": hung, "stderr": stderr, "records": records,
            "seconds": time.monotonic() - started}


def check_batch(result: dict[str, Any], inputs: list[Path], controls: list[Path]) -> dict[str, Any]:
    """The per-batch verdict: problems found and every input's outcome."""
    problems = []
    if result["hung"]:
        problems.append("hang: the command did not end within its time limit")
    elif result["exit_code"] not in (0, 1):
        problems.append(f"abort: exit code {result['exit_code']}")
    stderr = result["stderr"]
    if "Traceback (most recent call last)" in stderr or "internal error (" in stderr.split("failed:")[0]:
        problems.append("traceback or run-level internal error on stderr: " + stderr.strip().splitlines()[-1][:300])
    known = known_error_types()
    outcomes = {}
    for path in inputs:
        got = result["records"].get(os.path.realpath(path), [])
        if len(got) != 1:
            outcomes[path] = "missing" if not got else "duplicated"
            continue
        record = got[0]
        if record.get("error"):
            kind = record["error"]["type"]
            outcomes[path] = kind if kind in known else f"untyped:{kind}"
        else:
            outcomes[path] = "labelled" if record.get("labels") else "no_labels"
    for path in controls:
        if outcomes.get(path) != "labelled":
            problems.append(f"control {path.name} was not labelled ({outcomes.get(path)}): the pool did not survive")
    return {"problems": problems, "outcomes": outcomes}


def run_campaign(out: Path, mutants: int, *, seed: int = 0, batch: int = 500, model: Path | None = None,
                 decode_timeout: float = 20.0, workers: int = 2, log: Any = print) -> dict[str, Any]:
    """Generate ``mutants`` damaged videos, label them in batches, and summarise."""
    from falv.video.mutate import mutants as make_mutants
    from falv.video.testing import write_fuzz_sources

    out.mkdir(parents=True, exist_ok=True)
    sources = write_fuzz_sources(out / "sources")
    data = {name: path.read_bytes() for name, path in sources.items()}
    model = model or make_model(out / "model")
    found = out / "found"
    per_mutation: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    per_type: collections.Counter = collections.Counter()
    problems: list[str] = []
    bad_cases: list[dict[str, Any]] = []
    cases = list(make_mutants(data, mutants, seed=seed))
    started = time.monotonic()
    for first in range(0, len(cases), batch):
        chunk = cases[first:first + batch]
        folder = out / f"batch{first // batch:03d}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        inputs, meta = [], {}
        for case, source, mutation, blob in chunk:
            path = folder / f"{case:05d}-{mutation}-{source}"
            path.write_bytes(blob)
            inputs.append(path)
            meta[path] = (case, source, mutation)
        controls = []
        for name in CONTROLS:
            path = folder / f"zz-control-{name}"
            shutil.copy(sources[name], path)
            controls.append(path)
        result = run_batch(folder, folder / "out", model, timeout=120 + 4 * len(chunk) * max(1.0, decode_timeout / 10),
                           decode_timeout=decode_timeout, workers=workers)
        verdict = check_batch(result, inputs + controls, controls)
        problems += [f"batch {first // batch}: {p}" for p in verdict["problems"]]
        for path in inputs:
            outcome = verdict["outcomes"][path]
            case, source, mutation = meta[path]
            per_mutation[mutation][outcome] += 1
            per_type[outcome] += 1
            if outcome in ("internal", "missing", "duplicated", "no_labels") or outcome.startswith("untyped"):
                message = ""
                got = result["records"].get(os.path.realpath(path), [])
                if got and got[0].get("error"):
                    message = got[0]["error"]["message"]
                bad_cases.append({"case": case, "source": source, "mutation": mutation, "outcome": outcome,
                                  "message": message[:300]})
                found.mkdir(exist_ok=True)
                shutil.copy(path, found / path.name)
        log(f"batch {first // batch}: {len(chunk)} mutants in {result['seconds']:.1f} s, exit {result['exit_code']}, "
            f"{len(verdict['problems'])} problem(s); so far {dict(per_type)}")
        if not verdict["problems"]:
            shutil.rmtree(folder, ignore_errors=True)
    summary = {
        "mutants": len(cases), "seed": seed, "batch": batch, "seconds": round(time.monotonic() - started, 1),
        "aborts": sum("abort" in p or "traceback" in p for p in problems),
        "hangs": sum("hang" in p for p in problems),
        "missing_records": per_type["missing"] + per_type["duplicated"],
        "internal_errors": per_type["internal"],
        "problems": problems,
        "outcomes": dict(per_type.most_common()),
        "per_mutation": {m: dict(c.most_common()) for m, c in sorted(per_mutation.items())},
        "found": bad_cases,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500, help="mutants per falv label run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--model", type=Path, default=None, help="a falv model (default: a random tiny one)")
    parser.add_argument("--decode-timeout", type=float, default=20.0, help="falv label --timeout")
    parser.add_argument("--quick", action="store_true", help="48 mutants in one batch")
    args = parser.parse_args(argv)
    if args.quick:
        args.mutants, args.batch = 48, 48
    out = args.out or Path(tempfile.mkdtemp(prefix="falv-fuzz-"))
    summary = run_campaign(out, args.mutants, seed=args.seed, batch=args.batch, model=args.model,
                           decode_timeout=args.decode_timeout)
    print(json.dumps({k: v for k, v in summary.items() if k != "found"}, indent=2))
    for case in summary["found"]:
        print("found:", json.dumps(case))
    ok = not summary["problems"] and not summary["missing_records"]
    print(f"{summary['mutants']} mutants: {summary['aborts']} aborts, {summary['hangs']} hangs, "
          f"{summary['missing_records']} missing records, {summary['internal_errors']} internal errors "
          f"in {summary['seconds']} s; {out}/summary.json")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
