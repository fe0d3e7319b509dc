"""``falv probe``: print what falv sees in video files (size, rate, frames, rotation...)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from falv.cli.main import EXIT_OK, EXIT_SOME_FAILED


def _describe(info: object) -> str:
    from falv.video import VideoInfo

    assert isinstance(info, VideoInfo)
    frames = f"{info.num_frames}" if info.num_frames_exact else f"~{info.num_frames}"
    parts = [
        f"{info.width}x{info.height}",
        info.codec,
        f"{info.fps:.3f} fps" if info.fps else "fps unknown",
        f"{info.duration:.3f} s",
        f"{frames} frames",
        f"container {info.container.split(',')[0]}",
    ]
    if info.rotation:
        parts.append(f"rotated {info.rotation} deg")
    if info.start_time:
        parts.append(f"starts at {info.start_time:.3f} s")
    if info.has_audio:
        parts.append("audio")
    return f"{info.path}: " + ", ".join(parts)


@click.command("probe")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file (JSON Lines) on stdout.")
@click.option("--no-decode", is_flag=True, help="Read the headers only; do not decode the first frame.")
def probe(files: tuple[Path, ...], as_json: bool, no_decode: bool) -> int:
    """Print the properties of each FILE; a bad file gives one error line.

    Exit code 1 when any file could not be read (the code is returned to
    :func:`falv.cli.main.main`, which exits with it).
    """
    from falv.video import VideoError
    from falv.video import probe as probe_video

    failed = 0
    for path in files:
        try:
            info = probe_video(path, decode_first_frame=not no_decode)
        except VideoError as exc:
            failed += 1
            if as_json:
                click.echo(json.dumps(exc.to_dict(), ensure_ascii=False))
            else:
                click.echo(f"Error: {exc} [{exc.code}]", err=True)
            continue
        if as_json:
            click.echo(json.dumps(info.to_dict(), ensure_ascii=False))
        else:
            click.echo(_describe(info))
    return EXIT_SOME_FAILED if failed else EXIT_OK
