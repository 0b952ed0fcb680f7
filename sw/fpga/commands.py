"""`mpq fpga`: bitstreams, programming, run directories and runs over the
serial link (docs/fpga.md).

  mpq fpga bitstream --board B [-o DIR]     build/<board>/: bitstream + fpga_report.json
  mpq fpga program --board B [-d DIR]       send it to the board (its programmer)
  mpq fpga layers -o DIR [--config C]       a run directory of random compiled layers
  mpq fpga run DIR --port /dev/ttyUSB0      load, start, wait, read back, compare
  mpq fpga run DIR --simulate               the same over the simulated board's UART
"""

import json

from common.arguments import positive_float, positive_int
from common.errors import UserError
from hw.config import CONFIGS, get_config

DEFAULT_LATENCY_S = 0.2
# The boards of hw/boards/top.py (BOARDS), named here so that `--help` need not
# load Amaranth; tests/hw/fpga/test_boards.py holds the two lists equal.
BOARD_NAMES = ("icebreaker", "orangecrab", "ulx3s")


def _baud(args):
    from hw.boards.top import DEFAULT_BAUD
    return args.baud or DEFAULT_BAUD


def _run_bitstream(args):
    from common.files import replacing_directory
    from hw.boards.build import build_bitstream
    out = args.output or f"build/{args.board}"
    # Built beside it and swapped in whole: a failed or stopped build leaves
    # the folder as it was (the error carries the figures and the log's end).
    with replacing_directory(out, "fpga bitstream", force=args.force) as staging:
        report = build_bitstream(args.board, staging, config_name=args.config, baud=_baud(args))
    print(f"wrote {out}/{report['bitstream']} and {out}/fpga_report.json: "
          f"{report.get('luts')} LUTs, {report.get('ffs')} FFs, block RAMs "
          f"{(report.get('block_rams') or {}).get('used')}, DSPs {(report.get('dsps') or {}).get('used')}, "
          f"fmax {report.get('fmax_mhz')} MHz (board clock {report['clock_mhz']:g} MHz, "
          f"{'met' if report.get('timing_met') else 'NOT met'}), {report['build_seconds']} s")


def _run_program(args):
    from hw.boards.build import program_board
    program_board(args.board, args.directory or f"build/{args.board}")


def _run_layers(args):
    import numpy as np

    from sw.compile import compile_layer, random_input, random_layer_spec
    from sw.fpga.cases import case_from_layer, write_cases
    config = get_config(args.config)
    rng = np.random.default_rng(args.seed)
    # A configuration without stride2 (the iCE40's) runs stride 1 only.
    strides = {} if config.stride2 else {"stride": 1, "split_output": False}
    cases = []
    for index in range(args.count):
        spec = random_layer_spec(rng, name=f"layer{index}", max_channels=args.max_channels,
                                 max_size=args.max_size, **strides)
        compiled = compile_layer(spec, config)
        cases.append(case_from_layer(compiled, random_input(rng, spec)))
    path = write_cases(args.output, cases, config)
    print(f"wrote {path}: {len(cases)} layers for configuration {config.name!r}")


def _run_run(args):
    from sw.fpga.cases import read_cases, run_cases
    config_name, cases = read_cases(args.directory, args.images)
    config = get_config(config_name)
    if args.simulate:
        from sim.board_sim import run_on_simulated_board
        outcome = run_on_simulated_board(cases, config, build_dir=args.build_dir)
        results, stats = outcome["results"], outcome["stats"]
    else:
        import asyncio
        if not args.port:
            raise UserError("give the board's serial port (--port /dev/ttyUSB0), or --simulate")
        from sw.fpga.link import Link
        from sw.fpga.transport import SerialPort
        port = SerialPort(args.port, _baud(args))
        try:
            link = Link(port, config, byte_time=10 / _baud(args), latency=DEFAULT_LATENCY_S,
                        log=print if args.verbose else None)

            async def session():
                info = await link.read_register(3)
                rows, cols = info & 0xFF, info >> 8 & 0xFF
                if (rows, cols) != (config.rows, config.cols):
                    raise UserError(f"the board's core is {rows}x{cols}; the run directory "
                                    f"was compiled for {config.rows}x{config.cols} "
                                    f"({config.name!r})")
                return await run_cases(link, cases, wait_timeout=args.timeout, poll=0.01)

            results = asyncio.run(session())
            stats = link.stats
        finally:
            port.close()
    exact = sum(result["bit_exact"] for result in results)
    print(f"{exact} of {len(results)} cases bit-exact; link: {stats['frames']} frames, "
          f"{stats['retries']} retried")
    if args.results:
        from common.files import write_atomically
        write_atomically(args.results, json.dumps({"results": results, "stats": stats}, indent=1))
    return 0 if exact == len(results) else 1


def register(subparsers):
    parser = subparsers.add_parser("fpga", help="FPGA bitstreams and runs over the serial link")
    commands = parser.add_subparsers(dest="fpga_command", metavar="SUBCOMMAND", required=True)
    baud = "UART baud rate (default: the board top's, 115200)"

    sub = commands.add_parser("bitstream", help="build a board's bitstream and fpga_report.json")
    sub.add_argument("--board", required=True, choices=BOARD_NAMES)
    sub.add_argument("-o", "--output", help="build directory (default build/<board>)")
    sub.add_argument("--config", choices=sorted(CONFIGS),
                     help="named configuration (default: the board's)")
    sub.add_argument("--baud", type=positive_int, help=baud)
    sub.add_argument("--force", action="store_true",
                     help="replace an output folder that `mpq fpga bitstream` did not write")
    sub.set_defaults(run=_run_bitstream)

    sub = commands.add_parser("program", help="program the board with a built bitstream")
    sub.add_argument("--board", required=True, choices=BOARD_NAMES)
    sub.add_argument("-d", "--directory", help="build directory (default build/<board>)")
    sub.set_defaults(run=_run_program)

    sub = commands.add_parser("layers", help="write a run directory of random compiled layers")
    sub.add_argument("-o", "--output", required=True, help="run directory to write")
    sub.add_argument("--config", default="ice40", choices=sorted(CONFIGS),
                     help="named configuration (default %(default)s)")
    sub.add_argument("--count", type=positive_int, default=4, help="layers (default 4)")
    sub.add_argument("--seed", type=int, default=1)
    sub.add_argument("--max-channels", type=positive_int, default=8)
    sub.add_argument("--max-size", type=positive_int, default=6)
    sub.set_defaults(run=_run_layers)

    sub = commands.add_parser("run", help="run a run directory on the board and check it")
    sub.add_argument("directory", help="`mpq compile` output or `mpq fpga layers` output")
    sub.add_argument("--port", help="serial port of the board, e.g. /dev/ttyUSB1")
    sub.add_argument("--baud", type=positive_int, help=baud)
    sub.add_argument("--images", type=positive_int,
                     help="run only the first N cases (golden images)")
    sub.add_argument("--timeout", type=positive_float, default=10.0,
                     help="longest run of one case (s)")
    sub.add_argument("--simulate", action="store_true",
                     help="run on the simulated board top (Verilator) instead of a port")
    sub.add_argument("--build-dir", default="build/sim/board")
    sub.add_argument("--results", help="write the results as JSON here")
    sub.add_argument("-v", "--verbose", action="store_true")
    sub.set_defaults(run=_run_run)
