"""The compiler: one integer layer (`LayerSpec`) to memory images, a program
and a manifest for the core of docs/isa.md (`compile_layer`), the golden
model that executes them (`run_golden`, `execute`) and the plain numpy
reference of the layer (`reference_layer`)."""

from sw.compile.golden import Execution, GoldenRun, Timeline, execute, run_golden
from sw.compile.images import host_word_stream, merge_images, readmemh_text
from sw.compile.layer import LayerSpec, random_input, random_layer_spec
from sw.compile.lower import CompiledLayer, Placement, accumulator_bound, compile_layer
from sw.compile.reference import reference_accumulator, reference_layer

__all__ = [
    "CompiledLayer", "Execution", "GoldenRun", "LayerSpec", "Placement", "Timeline",
    "accumulator_bound", "compile_layer", "execute", "host_word_stream", "merge_images",
    "random_input", "random_layer_spec", "readmemh_text", "reference_accumulator",
    "reference_layer", "run_golden",
]
