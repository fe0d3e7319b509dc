"""What `falv label` accepts as INPUTS: files, folders, globs and list files."""

import os

from falv.labeling.inputs import collect_inputs


def touch(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_folders_are_searched_recursively_for_video_extensions(tmp_path):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "sub" / "b.MKV")
    touch(tmp_path / "sub" / "notes.txt")
    touch(tmp_path / ".hidden" / "c.mp4")
    found = collect_inputs([str(tmp_path)])
    assert [os.path.relpath(p, tmp_path) for p in found.paths] == ["a.mp4", os.path.join("sub", "b.MKV")]
    assert found.problems == []


def test_list_files_globs_and_duplicates(tmp_path):
    a = touch(tmp_path / "v" / "a.mp4")
    b = touch(tmp_path / "v" / "b.webm")
    touch(tmp_path / "list.csv", "path,label\nv/a.mp4,cat\nv/b.webm,dog\n")
    touch(tmp_path / "list.txt", "# comment\nv/a.mp4 cat\n\nv/missing.mp4\n")
    found = collect_inputs([str(tmp_path / "list.csv"), str(tmp_path / "list.txt"),
                            str(tmp_path / "v" / "*.mp4"), str(a)])
    assert found.paths == [str(a), str(b), str(tmp_path / "v" / "missing.mp4")]  # missing: an error record later


def test_what_cannot_be_used_is_reported_not_fatal(tmp_path):
    (tmp_path / "empty").mkdir()
    found = collect_inputs([str(tmp_path / "empty"), str(tmp_path / "*.avi"), str(tmp_path / "gone.mp4")])
    assert found.paths == [str(tmp_path / "gone.mp4")]
    assert [reason for _, reason in found.problems] == ["folder holds no video files", "pattern matches no file"]
