"""The `mpq` command.

Each subcommand lives in the module that owns its work and registers itself
through `register(subparsers)`; this file only lists those modules, so adding
a command touches one line here. Those modules import only what building
their parsers needs (no torch, no amaranth at import time) so that
`mpq --help` answers at once; their `run` functions import the rest.

What reaches the user: a `UserError` (bad input) prints one line naming what
is wrong and exits 2; Ctrl-C prints one line and exits 130; anything else is
a bug, printed as one line that says how to get the traceback (`--debug` or
MPQ_DEBUG=1) and exits 1.
"""

import argparse
import importlib
import os
import sys

from common.errors import UserError

# Modules that define subcommands, in the order `mpq --help` shows them.
COMMAND_MODULES = [
    "sim.demo",
    "hw.generate",
    "sw.quantize.commands",
    "sw.fpga.commands",
    "sw.compile.commands",
    "sim.commands",
    "sw.energy.commands",
]
INTERRUPTED = 130  # the shell's status for a process ended by SIGINT


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mpq",
        description="Mixed-precision quantization, compiler and 2/4-bit accelerator: "
                    "from a PyTorch network to bit-exact RTL.",
        epilog="`mpq COMMAND --help` explains each command. Set MPQ_DEBUG=1 (or pass --debug) "
               "to see the Python traceback of an unexpected error.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an unexpected error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv=None):
    # --debug is taken wherever it stands on the line (`mpq compile ... --debug`).
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("MPQ_DEBUG", "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    command = "mpq"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        command = f"mpq {args.command}"
        return args.run(args) or 0
    except UserError as error:
        print(f"{command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted; no partial output was kept", file=sys.stderr)
        return INTERRUPTED
    except OSError as error:  # the machine's refusal (disk full, permissions), not a bug
        if debug:
            raise
        where = f" ({error.filename})" if error.filename else ""
        print(f"{command}: error: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - the last guard before the user
        if debug:
            raise
        print(f"{command}: internal error: {type(error).__name__}: {error} (this is a bug; "
              "rerun with --debug or MPQ_DEBUG=1 for the traceback and report it)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
