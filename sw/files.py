"""Writing outputs all or nothing: the one rule for every command that
writes a directory."""

import contextlib
import os
import pathlib
import shutil
import tempfile


@contextlib.contextmanager
def replacing_directory(out_dir):
    """Yield a staging directory beside `out_dir`. If the block finishes, the
    staging directory replaces `out_dir` as a whole; if it raises, it is
    removed and `out_dir` is left as it was (no half-written output)."""
    out_dir = pathlib.Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent)).resolve()
    try:
        yield staging
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
