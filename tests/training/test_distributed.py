"""Two-process data-parallel training with torchrun (gloo on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from falv import FALForVideoClassification


def test_torchrun_two_processes(synth_set, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "falv", "train", "--data", str(synth_set), "--out", str(run), "--epochs", "2",
           "--batch-size", "4", "--frames", "4", "--image-size", "32", "--precision", "fp32", "--seed", "5"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 processes" in done.stdout
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["epochs"] == 2
    # one log written once (rank 0 only), steps = ceil(16 videos / 2 ranks / 2 per rank)
    epochs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2] and epochs[-1]["step"] == 8
    model = FALForVideoClassification.from_pretrained(run / "best")
    ckpt = load_file(str(next((run / "checkpoint").glob("step-*")) / "model.safetensors"))
    assert set(ckpt) == set(model.state_dict())
    assert all(torch.isfinite(v).all() for v in ckpt.values())
