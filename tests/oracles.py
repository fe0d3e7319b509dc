"""Reference implementations the model tests compare falv's families against.

pytorchvideo (Facebook's library of the PySlowFast architectures: C2D, I3D, Slow, SlowFast,
X3D, MViT) is the oracle for the PySlowFast zoo. It is pure Python and imports with falv's
torch; only its detection head imports ``torchvision.ops.RoIAlign``, and torchvision does not
import beside falv's torch. So pytorchvideo and its pure-Python dependencies are installed
without dependencies into their own folder (``.venv-tools/pytorchvideo``, pinned below, built
on first use and reused), put on ``sys.path`` for the test process only, and imported with a
stand-in ``torchvision.ops`` whose ``RoIAlign`` raises if anything ever builds it (classification
models never do); the stand-in leaves ``sys.modules`` once pytorchvideo is imported. Nothing of
this reaches falv's environment or falv at run time.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tests.tools.install import TOOLS, _locked

PYTORCHVIDEO_PINS = (
    "pytorchvideo==0.1.5",
    "fvcore==0.1.5.post20221221",
    "iopath==0.1.10",
    "portalocker==3.2.0",
    "yacs==0.1.8",
    "tabulate==0.9.0",
    "termcolor==2.5.0",
)


def _stub_torchvision() -> bool:
    """Put the stand-in in ``sys.modules``; False when a torchvision module is there already."""
    if "torchvision" in sys.modules:
        return False

    class RoIAlign:  # only pytorchvideo's detection head builds one
        def __init__(self, *args, **kwargs) -> None:
            raise RuntimeError("torchvision stand-in: RoIAlign is not available in falv's tests")

    vision = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.RoIAlign = RoIAlign
    vision.ops = ops
    sys.modules["torchvision"] = vision
    sys.modules["torchvision.ops"] = ops
    return True


def pytorchvideo_dir() -> Path:
    """The folder holding pytorchvideo and its pure-Python dependencies (built when missing)."""
    target = TOOLS / "pytorchvideo"
    stamp = target / ".falv-oracle-installed"
    want = "\n".join(PYTORCHVIDEO_PINS)
    with _locked(TOOLS / ".pytorchvideo.lock"):
        if stamp.is_file() and stamp.read_text() == want:
            return target
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--upgrade", "--target", str(target), *PYTORCHVIDEO_PINS],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"cannot install the pytorchvideo oracle: {result.stderr[-2000:]}")
        stamp.write_text(want)
    return target


def pytorchvideo():
    """The ``pytorchvideo.models`` package, importable in this process; skips the test (with
    the reason) only where no package registry can be reached."""
    try:
        folder = pytorchvideo_dir()
    except RuntimeError as exc:  # pragma: no cover - offline machine without a registry
        pytest.skip(str(exc))
    if str(folder) not in sys.path:
        sys.path.append(str(folder))  # after falv's environment: its torch, numpy stay first
    if "pytorchvideo.models" in sys.modules:
        return sys.modules["pytorchvideo.models"]
    stubbed = _stub_torchvision()
    try:  # pytorchvideo.models imports every builder (and the head's RoIAlign) now, once
        return importlib.import_module("pytorchvideo.models")
    finally:
        if stubbed:  # the stand-in must not outlive the import: transformers and others probe for
            # torchvision (importlib.util.find_spec), which a module without a spec breaks
            del sys.modules["torchvision"], sys.modules["torchvision.ops"]


def randomize_batch_norm(module, seed: int = 0) -> None:
    """Random running statistics and affine parameters in every BatchNorm of ``module``, so a
    wrong BatchNorm mapping changes the output."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
