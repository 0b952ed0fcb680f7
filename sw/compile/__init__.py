"""The compiler: one integer layer (`LayerSpec`) to memory images, a program
and a manifest for the core of docs/isa.md (`compile_layer`), the golden
model that executes them (`run_golden`, `execute`) and the plain numpy
reference of the layer (`reference_layer`)."""

from common.lazy import lazy_getattr

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

__getattr__ = lazy_getattr(__name__, _EXPORTS)
