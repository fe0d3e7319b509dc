"""Fuzz `falv label` with damaged copies of the suite's own videos (benchmarks/fuzz_label.py).

For every mutant the real command must end by itself with exit code 0 or 1, write
exactly one record per input with labels or a typed error, print no traceback, and
keep its decoder pool alive (the unmutated controls after the mutants get labels).
``make test`` runs a few hundred cases; ``make test PYTEST_ARGS="--fuzz-mutants 3000 -k fuzz"``
runs more (the campaign of docs/video.md used the script directly).
"""

from __future__ import annotations

import hashlib

import pytest

from falv.video.mutate import MUTATIONS, mp4_boxes, mutant, mutants, riff_chunks, size_fields
from falv.video.testing import FUZZ_SOURCES, write_fuzz_sources
from tests.benchmarks import load_script


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    paths = write_fuzz_sources(tmp_path_factory.mktemp("sources"))
    return {name: path.read_bytes() for name, path in paths.items()}


@pytest.mark.timeout(1800)
def test_label_survives_every_mutant(tmp_path, request):
    count = request.config.getoption("--fuzz-mutants")
    fuzz = load_script("fuzz_label")
    summary = fuzz.run_campaign(tmp_path, count, batch=max(count // 2, 1), decode_timeout=20.0, log=lambda *_: None)
    assert summary["problems"] == []
    assert (summary["aborts"], summary["hangs"], summary["missing_records"]) == (0, 0, 0)
    assert summary["internal_errors"] == 0, summary["found"]  # an internal error is a bug to look at
    assert sum(summary["outcomes"].values()) == count
    assert summary["outcomes"].get("labelled", 0) > count // 10  # damaged files that still decode get labels
    assert len(summary["per_mutation"]) == len(MUTATIONS)


def test_mutants_are_deterministic_and_cover_every_source_and_mutation(sources):
    first = [(c, s, m, hashlib.sha1(b).hexdigest()) for c, s, m, b in mutants(sources, 2 * 8 * len(sources))]
    again = [(c, s, m, hashlib.sha1(b).hexdigest()) for c, s, m, b in mutants(sources, 2 * 8 * len(sources))]
    assert first == again
    assert {(s, m) for _, s, m, _ in first} == {(s, m) for s in FUZZ_SOURCES for m in MUTATIONS}
    other_seed = [hashlib.sha1(b).hexdigest() for *_, b in mutants(sources, 40, seed=1)]
    assert other_seed != [h for *_, h in first[:40]]


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_every_mutation_damages_every_source(sources, name):
    index = list(MUTATIONS).index(name)
    for source, data in sources.items():
        changed = sum(mutant(data, index + 8 * k)[1] != data for k in range(4))
        assert changed >= 3, (name, source)  # (a rare mutation may write back what was there)


def test_structure_walkers_find_the_containers_fields(sources):
    kinds = {kind for _, _, kind in mp4_boxes(sources["h264.mp4"])}
    assert {b"ftyp", b"moov", b"mdat", b"trak", b"mvhd", b"tkhd", b"mdhd", b"stts"} <= kinds
    assert {b"RIFF", b"avih", b"strh", b"movi"} <= {kind for _, kind in riff_chunks(sources["mjpeg.avi"])}
    assert any(order == "ebml" for *_, order in size_fields(sources["vp9.webm"]))
    assert size_fields(sources["h264.ts"])  # PES packet lengths
