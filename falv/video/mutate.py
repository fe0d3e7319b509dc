"""Deterministic damage to video files, for fuzzing everything that reads them.

Each mutation is a pure function ``(data, rng) -> data`` of the file's bytes and a
:class:`random.Random`; :func:`mutant` picks the mutation and the seed from a case
number, so case ``k`` of a source is the same bytes on every run. The mutations are
what transfers and disks do to files, and what a hostile or buggy muxer writes:

- ``bit_flips``: 1-32 single-bit errors, half of them in the first 4 KB (headers);
- ``overwrite_run``: a run of 4 B-4 KB overwritten with noise, zeros or 0xFF;
- ``truncate``: the file cut at a random length;
- ``insert_garbage``: 1 B-2 KB of noise inserted (every later offset shifts);
- ``zero_header``: a structure header zeroed (an MP4 box, a Matroska element, a RIFF
  chunk, an MPEG-TS packet), or the file's first bytes;
- ``swap_blocks``: two blocks of 16 B-4 KB exchanged;
- ``blow_size``: a size field of the container's structure set to a wrong value
  (0, 1, all ones, twice, half, past the end of the file);
- ``bad_timing``: duration and timing fields (MP4 ``mvhd``/``tkhd``/``mdhd``
  durations and ``stts`` deltas, Matroska ``Duration`` and cluster timecodes, AVI
  frame counts) zeroed or blown up: a header that lies about time.

The structure walkers are lenient scanners, not parsers: they find likely
positions of boxes, elements and chunks in damaged data too.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator, Mapping

__all__ = ["MUTATIONS", "mutant", "mutants", "mp4_boxes", "ebml_elements", "riff_chunks", "size_fields"]

# MP4/QuickTime boxes that hold other boxes.
_MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"udta", b"mvex", b"moof",
                   b"traf", b"mfra"}
# Matroska/WebM element ids worth damaging (the 1-byte ids are too common to search for).
_EBML_IDS = {
    "EBML": b"\x1a\x45\xdf\xa3", "Segment": b"\x18\x53\x80\x67", "SeekHead": b"\x11\x4d\x9b\x74",
    "Info": b"\x15\x49\xa9\x66", "Tracks": b"\x16\x54\xae\x6b", "Cluster": b"\x1f\x43\xb6\x75",
    "Cues": b"\x1c\x53\xbb\x6b", "Duration": b"\x44\x89", "TimecodeScale": b"\x2a\xd7\xb1",
    "DefaultDuration": b"\x23\xe3\x83",
}
_RIFF_IDS = (b"RIFF", b"LIST", b"avih", b"strh", b"strf", b"movi", b"idx1", b"00dc", b"00db", b"01wb", b"JUNK")


def mp4_boxes(data: bytes) -> list[tuple[int, int, bytes]]:
    """``(offset, size, type)`` of the MP4/QuickTime boxes found by walking from the start
    and into container boxes; the walk stops where sizes stop making sense."""
    found: list[tuple[int, int, bytes]] = []

    def walk(start: int, end: int, depth: int) -> None:
        pos = start
        while pos + 8 <= end and depth < 8 and len(found) < 10_000:
            size = struct.unpack_from(">I", data, pos)[0]
            kind = bytes(data[pos + 4:pos + 8])
            header = 8
            if size == 1 and pos + 16 <= end:
                size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
            elif size == 0:
                size = end - pos
            if size < header or pos + size > end or not kind.isalnum() and kind not in (b"\xa9too",):
                return
            found.append((pos, size, kind))
            if kind in _MP4_CONTAINERS:
                walk(pos + header, pos + size, depth + 1)
            pos += size

    walk(0, len(data), 0)
    return found


def ebml_elements(data: bytes) -> list[tuple[int, str]]:
    """``(offset of the size field, element name)`` of likely Matroska elements."""
    out = []
    for name, ident in _EBML_IDS.items():
        pos = data.find(ident)
        while pos >= 0 and len(out) < 10_000:
            out.append((pos + len(ident), name))
            pos = data.find(ident, pos + 1)
    return sorted(out)


def riff_chunks(data: bytes) -> list[tuple[int, bytes]]:
    """``(offset, fourcc)`` of likely RIFF/AVI chunks (the size is the 4 bytes after the fourcc)."""
    out = []
    for ident in _RIFF_IDS:
        pos = data.find(ident)
        while pos >= 0 and len(out) < 10_000:
            if pos + 8 <= len(data):
                out.append((pos, ident))
            pos = data.find(ident, pos + 1)
    return sorted(out)


def size_fields(data: bytes) -> list[tuple[int, int, str]]:
    """``(offset, width in bytes, byte order or "ebml")`` of size fields of the container."""
    fields: list[tuple[int, int, str]] = [(off, 4, ">") for off, _, _ in mp4_boxes(data)]
    for off, _ in ebml_elements(data):
        if off < len(data) and data[off]:
            fields.append((off, 9 - data[off].bit_length(), "ebml"))
    fields += [(off + 4, 4, "<") for off, _ in riff_chunks(data)]
    if data[:1] == b"\x47":  # MPEG-TS: the PES packet length after each start code
        pos = data.find(b"\x00\x00\x01")
        while pos >= 0 and len(fields) < 20_000:
            if pos + 6 <= len(data):
                fields.append((pos + 4, 2, ">"))
            pos = data.find(b"\x00\x00\x01", pos + 3)
    return [f for f in fields if f[0] + f[1] <= len(data)]


# -- the mutations ------------------------------------------------------------------------------


def _noise(rng: random.Random, n: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(n))


def bit_flips(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 32)):
        pos = rng.randrange(min(len(out), 4096)) if rng.random() < 0.5 else rng.randrange(len(out))
        out[pos] ^= 1 << rng.randrange(8)
    return bytes(out)


def overwrite_run(data: bytes, rng: random.Random) -> bytes:
    n = min(len(data), rng.choice([4, 16, 64, 256, 1024, 4096]))
    start = rng.randrange(len(data) - n + 1)
    fill = rng.choice(["noise", "zeros", "ones"])
    run = _noise(rng, n) if fill == "noise" else (b"\x00" if fill == "zeros" else b"\xff") * n
    return data[:start] + run + data[start + n:]


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(1, len(data))] if len(data) > 1 else data


def insert_garbage(data: bytes, rng: random.Random) -> bytes:
    pos = rng.randrange(len(data) + 1)
    return data[:pos] + _noise(rng, rng.choice([1, 3, 16, 188, 512, 2048])) + data[pos:]


def zero_header(data: bytes, rng: random.Random) -> bytes:
    spots = [(off, 8) for off, _, _ in mp4_boxes(data)]
    spots += [(off - 4, 8) for off, _ in ebml_elements(data) if off >= 4]
    spots += [(off, 8) for off, _ in riff_chunks(data)]
    if data[:1] == b"\x47":
        spots += [(k * 188, 4) for k in range(len(data) // 188)]
    off, n = rng.choice(spots) if spots and rng.random() < 0.8 else (0, rng.choice([4, 8, 16, 64, 512]))
    n = min(n, len(data) - off)
    return data[:off] + b"\x00" * n + data[off + n:]


def swap_blocks(data: bytes, rng: random.Random) -> bytes:
    n = min(len(data) // 2, rng.choice([16, 64, 256, 1024, 4096]))
    if n < 1:
        return data
    a = rng.randrange(len(data) - 2 * n + 1)
    b = rng.randrange(a + n, len(data) - n + 1)
    return data[:a] + data[b:b + n] + data[a + n:b] + data[a:a + n] + data[b + n:]


def _set_field(data: bytes, off: int, width: int, order: str, rng: random.Random) -> bytes:
    if order == "ebml":  # keep the length marker, set the value bits
        marker = 1 << (8 - width)
        value_bits = 7 * width
        old = int.from_bytes(data[off:off + width], "big") & ((1 << value_bits) - 1)
        new = rng.choice([0, 1, (1 << value_bits) - 1, (1 << value_bits) - 2, old * 2, old // 2,
                          min(len(data) * 4, (1 << value_bits) - 2)])
        raw = ((marker << (8 * (width - 1))) | new).to_bytes(width, "big")
    else:
        fmt = {2: "H", 4: "I", 8: "Q"}[width]
        limit = (1 << (8 * width)) - 1
        old = struct.unpack_from(order + fmt, data, off)[0]
        new = rng.choice([0, 1, 7, limit, limit >> 1, min(old * 2, limit), old // 2, min(len(data) * 4, limit)])
        raw = struct.pack(order + fmt, new)
    return data[:off] + raw + data[off + width:]


def blow_size(data: bytes, rng: random.Random) -> bytes:
    fields = size_fields(data)
    if not fields:
        return overwrite_run(data, rng)
    return _set_field(data, *rng.choice(fields), rng)


def _timing_fields(data: bytes) -> list[tuple[int, int, str]]:
    fields: list[tuple[int, int, str]] = []
    for off, size, kind in mp4_boxes(data):
        if off + 12 > len(data):
            continue
        version = data[off + 8]
        if kind in (b"mvhd", b"mdhd"):  # version, flags, created, modified, timescale, duration
            fields.append((off + 32, 8, ">") if version == 1 else (off + 24, 4, ">"))
        elif kind == b"tkhd":  # ..., track id, reserved, duration
            fields.append((off + 36, 8, ">") if version == 1 else (off + 28, 4, ">"))
        elif kind in (b"stts", b"ctts", b"elst"):  # the first entries of the table
            for k in range(min(4, max(0, (size - 16) // 8))):
                fields.append((off + 16 + 8 * k + 4, 4, ">"))
    for off, name in ebml_elements(data):
        if name in ("Duration", "TimecodeScale", "DefaultDuration") and off < len(data):
            width = 9 - data[off].bit_length() if data[off] else 1
            length = int.from_bytes(data[off:off + width], "big") & ((1 << (7 * width)) - 1)
            if 0 < length <= 8:
                fields.append((off + width, length, ">raw"))
        if name == "Cluster" and off + 8 < len(data):  # the Timecode element (0xE7) that opens a cluster
            tc = data.find(b"\xe7", off, off + 16)
            if tc > 0 and tc + 2 < len(data) and data[tc + 1] & 0x80:
                fields.append((tc + 2, min(data[tc + 1] & 0x7F, 8), ">raw"))
    for off, ident in riff_chunks(data):
        if ident == b"avih":
            fields.append((off + 8 + 16, 4, "<"))  # total frames
        elif ident == b"strh":
            fields.append((off + 8 + 32, 4, "<"))  # stream length
    return [f for f in fields if 0 < f[1] and f[0] + f[1] <= len(data)]


def bad_timing(data: bytes, rng: random.Random) -> bytes:
    fields = _timing_fields(data)
    if not fields:
        return bit_flips(data, rng)
    out = data
    for off, width, order in rng.sample(fields, k=min(len(fields), rng.randint(1, 3))):
        if order == ">raw":
            raw = rng.choice([b"\x00" * width, b"\xff" * width, _noise(rng, width)])
            out = out[:off] + raw + out[off + width:]
        else:
            out = _set_field(out, off, width, order, rng)
    return out


MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "bit_flips": bit_flips,
    "overwrite_run": overwrite_run,
    "truncate": truncate,
    "insert_garbage": insert_garbage,
    "zero_header": zero_header,
    "swap_blocks": swap_blocks,
    "blow_size": blow_size,
    "bad_timing": bad_timing,
}


def mutant(data: bytes, case: int, *, seed: int = 0) -> tuple[str, bytes]:
    """Case ``case`` of ``data``: ``(mutation name, damaged bytes)``, the same on every run."""
    if not data:
        raise ValueError("cannot mutate an empty file")
    names = list(MUTATIONS)
    name = names[case % len(names)]
    rng = random.Random(f"falv-fuzz:{seed}:{case}")
    return name, MUTATIONS[name](bytes(data), rng)


def mutants(sources: Mapping[str, bytes], count: int, *, seed: int = 0) -> Iterator[tuple[int, str, str, bytes]]:
    """``count`` cases spread over ``sources`` (name -> bytes): ``(case, source name, mutation, bytes)``.

    Case ``k`` takes source ``k % len(sources)`` and mutation ``(k // len(sources)) % 8``,
    so any prefix of the cases covers every source with every mutation as evenly as it can.
    """
    names = sorted(sources)
    if not names:
        raise ValueError("no source files to mutate")
    for case in range(count):
        source = names[case % len(names)]
        name, data = mutant(sources[source], case // len(names), seed=seed * 1_000_003 + case)
        yield case, source, name, data
