"""Atomic writes: whole files or nothing, with ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from falv.hub import io


def test_written_files_get_the_umask_permissions_not_private_ones(tmp_path):
    path = tmp_path / "labels.csv"
    io.atomic_write_text(path, "a,b\n")
    assert path.read_text() == "a,b\n"
    assert stat.S_IMODE(path.stat().st_mode) == io._FILE_MODE
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert stat.S_IMODE(plain.stat().st_mode) == stat.S_IMODE(path.stat().st_mode)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.safetensors"
    io.atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError):
        with io.atomic_open(path, "wb") as handle:
            handle.write(b"half")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_atomic_writes_and_the_label_command_do_not_import_torch():
    """Every command writes through falv.hub.io; importing it (and `falv label --help`) must
    not import torch (~1.3-2 s): falv.hub's loaders are imported on first use."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from falv.hub import io\n"
        "from falv.cli.main import main\n"
        "try:\n"
        "    main(['label', '--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "import falv.hub\n"
        "from falv.hub import load_model, save_model\n"
        "assert callable(load_model) and callable(save_model) and 'load_config' in dir(falv.hub)\n"
        "assert 'torch' in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Usage: falv label" in out.stdout
