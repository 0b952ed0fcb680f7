"""The `mpq` command.

Each subcommand lives in the module that owns its work and registers itself
through `register(subparsers)`; this file only lists those modules, so adding
a command touches one line here.
"""

import argparse
import importlib
import sys

from sw.errors import UserError

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


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mpq",
        description="Mixed-precision quantization, compiler and 2/4-bit accelerator: "
                    "from a PyTorch network to bit-exact RTL.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args) or 0
    except UserError as error:
        print(f"mpq {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
