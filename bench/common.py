"""What every benchmark writes beside its figures: command, revision, machine."""

import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys

RESULTS = pathlib.Path(__file__).parent / "results"


def provenance():
    def git(*args):
        try:
            # In the checkout, wherever the bench runs from.
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                                  cwd=pathlib.Path(__file__).resolve().parents[1]).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"
    return {
        "command": " ".join([pathlib.Path(sys.executable).name] + sys.argv),
        # A copy without .git (a lent GPU machine) is told its revision.
        "revision": os.environ.get("MPQ_REVISION") or git("rev-parse", "HEAD"),
        "worktree_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"node": platform.node(), "cpu": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
    }


def write_json(name, figures):
    """Write bench/results/<name>.json atomically; returns the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**provenance(), **figures}, indent=2) + "\n")
    os.replace(tmp, path)
    return path
