"""The compiler: one integer layer (`LayerSpec`) to memory images, a program
and a manifest for the core of docs/isa.md (`compile_layer`), the golden
model that executes them (`run_golden`, `execute`) and the plain numpy
reference of the layer (`reference_layer`)."""

import importlib

_EXPORTS = {
    "Execution": "sw.compile.golden",
    "GoldenRun": "sw.compile.golden",
    "Timeline": "sw.compile.golden",
    "execute": "sw.compile.golden",
    "run_golden": "sw.compile.golden",
    "host_word_stream": "sw.compile.images",
    "merge_images": "sw.compile.images",
    "readmemh_text": "sw.compile.images",
    "LayerSpec": "sw.compile.layer",
    "random_input": "sw.compile.layer",
    "random_layer_spec": "sw.compile.layer",
    "CompiledLayer": "sw.compile.lower",
    "Placement": "sw.compile.lower",
    "accumulator_bound": "sw.compile.lower",
    "compile_layer": "sw.compile.lower",
    "reference_accumulator": "sw.compile.reference",
    "reference_layer": "sw.compile.reference",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    # Re-exports load on first use (PEP 562), so that importing one module of
    # this package (a command's parser, for `mpq --help`) loads nothing heavy.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
