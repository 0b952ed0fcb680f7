"""The output rules of common/files.py: which folders a command may replace, and
that a replacement is all or nothing, interrupted or not."""

import json
import os
import pathlib

import pytest

from common import files
from common.errors import UserError
from common.files import OUTPUT_MARKER, check_output_directory, replacing_directory, writing_file


def _users_folder(path):
    path.mkdir(parents=True)
    (path / "mine.txt").write_text("the user's")
    return path


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_new_and_empty_folders_are_written(tmp_path):
    for out in (tmp_path / "new" / "deeper", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        with replacing_directory(out, "compile") as staging:
            (staging / "a.txt").write_text("new")
        assert (out / "a.txt").read_text() == "new"
        assert json.loads((out / OUTPUT_MARKER).read_text()) == {"command": "compile"}


def test_a_folder_of_other_files_is_refused_and_kept(tmp_path):
    out = _users_folder(tmp_path / "work")
    with pytest.raises(UserError, match="--force"):
        with replacing_directory(out, "compile") as staging:
            (staging / "a.txt").write_text("new")
    assert _tree(out) == ["mine.txt"]
    assert _tree(tmp_path) == ["work", "work/mine.txt"], "a staging folder was left behind"


def test_another_commands_output_is_refused(tmp_path):
    out = tmp_path / "out"
    with replacing_directory(out, "verilog") as staging:
        (staging / "core.v").write_text("module core; endmodule")
    with pytest.raises(UserError, match="did not write"):
        check_output_directory(out, "compile")


def test_own_earlier_output_and_force_replace_as_a_whole(tmp_path):
    out = tmp_path / "out"
    with replacing_directory(out, "compile") as staging:
        (staging / "old.txt").write_text("old")
    with replacing_directory(out, "compile") as staging:
        (staging / "new.txt").write_text("new")
    assert _tree(out) == [OUTPUT_MARKER, "new.txt"]
    users = _users_folder(tmp_path / "users")
    with replacing_directory(users, "compile", force=True) as staging:
        (staging / "new.txt").write_text("new")
    assert _tree(users) == [OUTPUT_MARKER, "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "users"]


@pytest.mark.parametrize("where", ["cwd", "parent", "home", "root", "empty"])
def test_protected_folders_are_refused_even_with_force(tmp_path, monkeypatch, where):
    work = _users_folder(tmp_path / "home" / "work")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = {"cwd": ".", "parent": "..", "home": "~", "root": "/", "empty": ""}[where]
    with pytest.raises(UserError):
        with replacing_directory(out, "compile", force=True):
            pass
    assert _tree(work) == ["mine.txt"]


def test_a_folder_holding_an_input_is_refused_even_with_force(tmp_path):
    model = _users_folder(tmp_path / "models") / "net.mpq"
    model.write_bytes(b"model")
    for out in (tmp_path / "models", tmp_path):
        with pytest.raises(UserError, match="holds the input"):
            check_output_directory(out, "compile", inputs=[model], force=True)
    assert model.read_bytes() == b"model"


def test_an_existing_file_or_an_impossible_path_is_an_error(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        check_output_directory(a_file, "compile")
    with pytest.raises(UserError, match="cannot create"):
        with replacing_directory(a_file / "below", "compile"):
            pass
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_a_failed_or_interrupted_write_keeps_the_old_output(tmp_path, failure):
    out = tmp_path / "out"
    with replacing_directory(out, "compile") as staging:
        (staging / "old.txt").write_text("old")
    with pytest.raises(failure):
        with replacing_directory(out, "compile") as staging:
            (staging / "half.txt").write_text("half")
            raise failure()
    assert _tree(out) == [OUTPUT_MARKER, "old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_the_swap_is_one_atomic_exchange_here(tmp_path):
    # Linux has renameat2(RENAME_EXCHANGE): the old output is replaced by the
    # new one in one step, so no instant exists without a whole output.
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    assert files._exchange(a, b)
    assert (b / "x").read_text() == "a" and not (a / "x").exists()


def test_without_an_exchange_a_failed_rename_puts_the_old_output_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with replacing_directory(out, "compile") as staging:
        (staging / "old.txt").write_text("old")
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    real_rename = os.rename
    calls = []

    def rename(source, target):
        calls.append((source, target))
        if len(calls) == 2:  # the new output's rename into place
            raise KeyboardInterrupt
        real_rename(source, target)

    monkeypatch.setattr(files.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        with replacing_directory(out, "compile") as staging:
            (staging / "new.txt").write_text("new")
    assert _tree(out) == [OUTPUT_MARKER, "old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    monkeypatch.setattr(files.os, "rename", real_rename)
    with replacing_directory(out, "compile") as staging:   # the two-rename path itself
        (staging / "new.txt").write_text("new")
    assert _tree(out) == [OUTPUT_MARKER, "new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_writing_a_file_is_all_or_nothing(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with writing_file(path) as temporary:
            temporary.write_text("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old" and _tree(tmp_path) == ["result.json"]
    files.write_atomically(path, "new")
    assert path.read_text() == "new" and _tree(tmp_path) == ["result.json"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~files._umask())
    with pytest.raises(UserError, match="is a directory"):
        files.write_atomically(tmp_path, "x")
    with pytest.raises(UserError, match="cannot write"):
        files.write_atomically(pathlib.Path(path) / "below", "x")
