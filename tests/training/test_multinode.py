"""Training across machines: two torchrun launchers (``--nnodes 2``, c10d rendezvous on loopback),
one process each, against one process with the same global batch.

Why the two runs can be compared weight for weight: falv's batches are a seeded shuffle dealt
round-robin to the ranks (``_epoch_batches``), so each step sees the same clips in both runs
(rank r of 2 takes clips r, r+2 of the global batch of 4); clips are augmented from
``(seed, epoch, index)``, never from the rank; dropout and drop path are 0 in the preset; DDP
averages the per-rank mean losses' gradients, which is the mean over the global batch. What
differs is only the order of the float32 sums (half-batch means, then an all-reduce): ~1e-7
relative per gradient entry. Weight by weight that is not a usable bound: AdamW's first steps move
each weight by about lr x sign(gradient), so an entry whose gradient is at the rounding noise can
move +lr in one run and -lr in the other (measured: 1.2e-4 max abs apart, lr 1e-3). Over the whole
update it is: the two runs' updates differ by at most 1% of the update's norm (a rank training
alone, a wrong batch or a missing all-reduce gives a different direction: tens of percent), and
the epoch's training loss, summed over every clip of every rank, agrees within 1e-4.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ["-m", "falv", "train", "--epochs", "1", "--batch-size", "4", "--frames", "4", "--image-size", "32",
         "--precision", "fp32", "--seed", "5", "--workers", "0", "--lr", "1e-3", "--warmup-epochs", "0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "GLOO_SOCKET_IFNAME": "lo"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _weights(run: Path) -> dict[str, torch.Tensor]:
    steps = sorted((run / "checkpoint").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return load_file(str(steps[-1] / "model.safetensors"))


def test_two_nodes_train_the_model_one_process_trains(synth_set, tmp_path):
    data = ["--data", str(synth_set)]
    single = tmp_path / "single"
    one = subprocess.run([sys.executable, *TRAIN, *data, "--out", str(single)], capture_output=True, text=True,
                         env=_env(), cwd=ROOT, timeout=400)
    assert one.returncode == 0, one.stderr[-3000:]

    port = _free_port()
    multi = tmp_path / "multi"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
              "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "falv-test",
              "--local-addr", "127.0.0.1", "--max-restarts", "0"]
    nodes = [subprocess.Popen([*launch, *TRAIN, *data, "--out", str(multi)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT) for _ in range(2)]
    try:
        outs = [n.communicate(timeout=400) for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    for n, (_, err) in zip(nodes, outs):
        assert n.returncode == 0, err[-3000:]
    assert any("2 processes" in out for out, _ in outs)

    a, b = _weights(single), _weights(multi)
    assert set(a) == set(b)
    # the initial weights depend on the seed only (falv.training.loop seeds torch, then builds the model)
    from falv import FALConfig, FALForVideoClassification

    torch.manual_seed(5)
    init = FALForVideoClassification(FALConfig.from_pretrained(single / "best")).state_dict()
    moved = torch.cat([(a[k] - init[k]).flatten() for k in a]).norm()
    apart = torch.cat([(a[k] - b[k]).flatten() for k in a]).norm()
    print(f"update norm {float(moved):.4g}, runs apart {float(apart):.4g}")
    assert float(apart) <= 1e-2 * float(moved), (float(apart), float(moved))
    assert float(moved) > 1e-3  # the steps did move the weights
    # and both saw the same batches: the same epoch loss, summed over all clips
    loss = [[json.loads(x)["train_loss"] for x in (run / "log.jsonl").read_text().splitlines()
             if json.loads(x)["event"] == "epoch"] for run in (single, multi)]
    assert len(loss[0]) == 1 and abs(loss[0][0] - loss[1][0]) <= 1e-4, loss
