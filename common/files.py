"""Writing outputs all or nothing, and never over what the command did not
write: the one rule for every command that writes a directory or a file.

An output directory is replaced only when it does not exist, is empty, or
holds the marker (`OUTPUT_MARKER`) that the same command left there on an
earlier run; anything else needs `force=True` (`--force`). Some directories
are refused even then: the current directory and its parents, the home
folder, the filesystem root, and any folder that holds one of the command's
inputs, because replacing them would delete what the user is working in.

The new output is written into a staging directory beside the old one and
swapped in with one `renameat2(RENAME_EXCHANGE)` where the kernel has it
(Linux 3.15+), else with two renames; at every instant the old or the new
output is whole under some name, and an interrupt leaves no staging behind.
"""

import contextlib
import ctypes
import ctypes.util
import json
import os
import pathlib
import shutil
import tempfile

from common.errors import UserError

OUTPUT_MARKER = ".mpq-output.json"


def _exchange(a, b):
    """Atomically swap two existing paths; False where the system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


def _protected(path):
    """Why `path` may never be replaced wholesale, or None."""
    here = pathlib.Path.cwd().resolve()
    if path == pathlib.Path(path.anchor):
        return "it is the filesystem root"
    if path == pathlib.Path.home().resolve():
        return "it is your home folder"
    if path == here:
        return "it is the current directory"
    if path in here.parents:
        return "it holds the current directory"
    return None


def check_output_directory(out_dir, command, *, inputs=(), force=False, option="-o"):
    """The resolved path of `out_dir` if `command` may replace it; else a
    `UserError` naming the folder and what to do."""
    if out_dir is None or not str(out_dir).strip():
        raise UserError(f"{option} is empty: give an output directory (a new folder, or one "
                        f"that `mpq {command}` wrote before)")
    path = pathlib.Path(out_dir).expanduser().resolve()
    reason = _protected(path)
    for source in inputs:
        source = pathlib.Path(source).expanduser().resolve()
        if path == source or path in source.parents:
            reason = f"it holds the input {source}"
    if reason:
        raise UserError(f"{option} {out_dir}: refusing to replace this folder: {reason}; "
                        "give a new folder for the output")
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {out_dir}: exists and is not a directory; give a directory path")
    if path.is_dir() and not force and any(path.iterdir()) and not _written_by(path, command):
        raise UserError(f"{option} {out_dir}: the folder holds files that `mpq {command}` did not "
                        "write; it would replace them all. Give a new or empty folder, or pass "
                        "--force to replace it (also for an output of an mpq older than the "
                        f"{OUTPUT_MARKER} marker)")
    return path


def _written_by(path, command):
    try:
        marker = json.loads((path / OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("command") == command


@contextlib.contextmanager
def replacing_directory(out_dir, command, *, inputs=(), force=False, option="-o"):
    """Yield a staging directory beside `out_dir`. If the block finishes, the
    staging directory (with the command's marker) replaces `out_dir` as a
    whole; if it raises or is interrupted, the staging directory is removed
    and `out_dir` is left as it was. `check_output_directory` decides first
    whether `out_dir` may be replaced at all."""
    path = check_output_directory(out_dir, command, inputs=inputs, force=force, option=option)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.new-", dir=path.parent))
    except OSError as error:
        raise UserError(f"{option} {out_dir}: cannot create the output folder there "
                        f"({error.strerror or error}); give a writable path") from None
    retired = None
    try:
        yield staging
        (staging / OUTPUT_MARKER).write_text(json.dumps({"command": command}) + "\n")
        staging.chmod(0o777 & ~_umask())
        if not path.exists():
            os.rename(staging, path)
        elif not _exchange(staging, path):   # staging now holds the old output
            retired = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rename(path, retired / "old")
            try:
                os.rename(staging, path)
            except BaseException:
                os.rename(retired / "old", path)
                raise
    finally:
        for leftover in (staging, retired):
            if leftover is not None:
                shutil.rmtree(leftover, ignore_errors=True)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_file(path, command, recognise, *, force=False, option="-o"):
    """Refuse to overwrite an existing `path` that `recognise(path)` does not
    take for this command's own earlier output, unless `force`."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory; give a file path for the output")
    if path.exists() and not force and not _recognised(recognise, path):
        raise UserError(f"{option} {path}: the file exists and was not written by `mpq {command}`; "
                        "give another file name, or pass --force to replace it")


def _recognised(recognise, path):
    try:
        return bool(recognise(path))
    except Exception:  # noqa: BLE001 - any file it cannot parse is not its own output
        return False


def write_atomically(path, data):
    """Write `data` (str or bytes) to `path` through a temporary file beside
    it, so `path` is the old content or the new, never a partial one."""
    path = pathlib.Path(path)
    with writing_file(path) as temporary:
        if isinstance(data, str):
            temporary.write_text(data)
        else:
            temporary.write_bytes(data)


@contextlib.contextmanager
def writing_file(path):
    """Yield a temporary path beside `path`; it replaces `path` when the block
    finishes and is removed if the block raises or is interrupted."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a file path for the output")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise UserError(f"cannot write {path} ({error.strerror or error}); give a writable "
                        "path") from None
    os.close(handle)
    temporary = pathlib.Path(name)
    try:
        yield temporary
        temporary.chmod(0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
