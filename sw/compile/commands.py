"""`mpq compile MODEL --config NAME -o DIR`."""

from common.arguments import add_force, positive_int
from hw.config import CONFIGS


def golden_inputs(header, count, seed=0):
    """Deterministic uint8 inputs for the golden outputs stored beside the
    images (the FPGA host and `mpq sim` check against them)."""
    import numpy as np

    shape = tuple(header["input"]["shape"])
    return np.random.default_rng(seed).integers(0, 256, size=(count,) + shape, dtype=np.uint8)


def run_compile(args):
    from common.progress import Progress
    from sw.compile.artifacts import write_compiled
    from sw.quantize.export import read_model_file

    header, _ = read_model_file(args.model)
    with Progress("compiling", len(header["layers"]), "layer", leave=False) as bar:
        network = write_compiled(args.model, args.config, args.output,
                                 golden_inputs(header, args.golden_images),
                                 progress=lambda _: bar.update(), force=args.force)
    manifest = network.manifest
    cycles = manifest.get("expected_counters_per_inference", {}).get("cycles")
    print(f"wrote {args.output}: {len(manifest['layers'])} layers in {len(manifest['phases'])} "
          f"phase(s) for `{args.config}`"
          + (f", {cycles:,} cycles per inference" if cycles else "")
          + f", external memory {manifest['external_bytes_per_inference']:,} bytes per inference"
          + _activation_summary(manifest))
    return 0


def _activation_summary(manifest):
    """The activation memory the maps take, and their slot widths."""
    words = manifest["activation_words"]
    slots = sorted({layer["act_bits_stored"] for layer in manifest["layers"] if not layer["raw"]})
    return (f"; activations {words['used']:,} of {words['depth']:,} words per bank"
            + (f" in {'/'.join(map(str, slots))}-bit slots" if slots else ""))


def register(subparsers):
    parser = subparsers.add_parser("compile", help="compile a model file for the accelerator")
    parser.add_argument("model", help="model file written by `mpq export`")
    parser.add_argument("--config", default="default", choices=sorted(CONFIGS),
                        help="named configuration (hw/config.py; default %(default)s)")
    parser.add_argument("-o", "--output", required=True,
                        help="output directory: a new or empty folder, or one this command "
                             "wrote before (replaced as a whole)")
    parser.add_argument("--golden-images", type=positive_int, default=4,
                        help="random inputs whose golden outputs are stored, for `mpq fpga run` "
                             "to check against (default 4)")
    add_force(parser)
    parser.set_defaults(run=run_compile)
