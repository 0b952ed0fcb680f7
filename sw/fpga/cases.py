"""What the FPGA host program runs: *cases*, each memory images to load and
run, output regions to read back and the golden outputs to compare them with
(docs/fpga.md, "Run directories").

A case is a dict (JSON-ready):

    name               str
    config             hw/config.py name the images were compiled for
    phases             [[[mem, bank, start, [32-bit words]], ...], ...]: per phase, the
                       segments to load (host_word_stream) before starting the core and
                       waiting for done; memories keep their contents between phases
    outputs            [{"name", "memory": "activations" | "results", "base": int,
                         "shape": [channels, height, width], "expected": nested lists,
                         "split": the map's columns parity-split (docs/isa.md; absent: false)}]
    expected_counters  the golden model's counters summed over the phases (optional)

Two sources of cases: a directory written by `mpq compile MODEL -o DIR`
(`cases_from_network`: one case per golden image, every layer's output
checked) and `fpga_cases.json` (`mpq fpga layers`: random single layers,
`case_from_layer`). `run_cases` runs them over a `Link`: reset the core, per
phase load, start, wait and read the counters, then read every output
region back, decode and compare.
"""

import json
import pathlib
import time

import numpy as np

from common.errors import UserError
from hw.counters import COUNTERS, counter_reading
from hw.isa import ACT_SLOT_BITS, Memory
from sw.compile import host_word_stream, run_golden
from sw.compile.encoding import act_address, decode_result, map_words_per_bank, slot_value
from sw.compile.lower import SlotBits

CASES_FILE = "fpga_cases.json"
FORMAT = "mpq-fpga-cases/1"


def _segments(images, config):
    return [[mem, bank, start, list(words)]
            for mem, bank, start, words in host_word_stream(images, config)]


def output_of(compiled, expected, name=None):
    """The output region of a compiled layer and its golden values."""
    spec, regs = compiled.spec, compiled.registers
    raw = bool(spec.raw)
    shape = [int(d) for d in spec.output_shape]
    return {"name": name or spec.name, "memory": "results" if raw else "activations",
            "base": int(regs["RES_BASE"] if raw else regs["OUT_BASE"]), "shape": shape,
            "expected": np.asarray(expected, dtype=np.int64).reshape(shape).tolist(),
            "split": bool(spec.split_output), "signed": bool(spec.act_signed),
            "slot_bits": None if raw else SlotBits.of(spec, compiled.config).output}


def case_from_layer(compiled, x, *, name=None, golden=None):
    """The case of one compiled layer (`sw.compile.compile_layer`) on input `x`."""
    golden = golden or run_golden(compiled, x)
    return {
        "name": name or compiled.spec.name,
        "config": compiled.config.name,
        "phases": [_segments(compiled.memories(x), compiled.config)],
        "outputs": [output_of(compiled, golden.output)],
        "expected_counters": {key: int(value) for key, value in golden.counters.items()},
    }


def cases_from_network(network, golden, count=None):
    """One case per golden image of a compiled network (`read_compiled`).
    A single-phase network's static images go with the first image only:
    later images load just their input (memories keep their contents)."""
    config = network.config
    inputs = golden["inputs"] if count is None else golden["inputs"][:count]
    single = len(network.phases) == 1
    cases = []
    for index, x in enumerate(inputs):
        phases = []
        for number in range(len(network.phases)):
            images = (network.input_images(x) if single and index > 0
                      else network.phase_images(number, x))
            phases.append(_segments(images, config))
        # Only the layers whose output survives the run (`checked`): a later
        # layer may have reused an earlier one's activation memory.
        outputs = [output_of(layer, golden[f"layer{k}"][index], spec.name)
                   for k, (spec, layer) in enumerate(zip(network.specs, network.layers))
                   if network.checked[k]]
        counters = network.manifest.get("expected_counters_per_inference")
        cases.append({"name": f"image{index}", "config": config.name, "phases": phases,
                      "outputs": outputs, "expected_counters": counters})
    return cases


def _slot_bits(output):
    """An activation output's slot bits: a cases file written before packed
    slots names none, and its maps are in 4-bit slots (unsigned, as it read them)."""
    return output.get("slot_bits") or ACT_SLOT_BITS


def readback_ranges(output, config):
    """[(mem, bank, start, count)] holding an output region."""
    channels, height, width = output["shape"]
    if output["memory"] == "results":
        return [(Memory.RESULTS, 0, output["base"], channels * height * width)]
    count = map_words_per_bank(height, width, channels, config.cols, _slot_bits(output))
    return [(Memory.ACTIVATIONS, bank, output["base"], count) for bank in range(config.cols)]


def decode_output(output, config, entries):
    """The output array from the entries of `readback_ranges` (same order)."""
    channels, height, width = output["shape"]
    ranges = readback_ranges(output, config)
    banks = {}
    for (mem, bank, start, _), values in zip(ranges, entries):
        banks[(mem, bank)] = {start + i: v for i, v in enumerate(values)}
    out = np.zeros((channels, height, width), dtype=np.int64)
    for y in range(height):
        for x in range(width):
            for k in range(channels):
                if output["memory"] == "results":
                    out[k, y, x] = decode_result(banks[(Memory.RESULTS, 0)].get(
                        output["base"] + (y * width + x) * channels + k, 0))
                else:
                    bits = _slot_bits(output)
                    bank, word, shift = act_address(y, x, k, output["base"], width, channels,
                                                    config.cols, bits, output.get("split", False))
                    words = banks[(Memory.ACTIVATIONS, bank)]
                    out[k, y, x] = slot_value(words.get(word, 0), words.get(word + 1, 0), shift, bits)
                    if output.get("signed", False):
                        out[k, y, x] -= (out[k, y, x] >> (bits - 1)) << bits
    return out


def write_cases(directory, cases, config):
    from common.files import check_output_file, write_atomically
    path = pathlib.Path(directory) / CASES_FILE
    check_output_file(path, "fpga layers", _is_cases_file)
    write_atomically(path, json.dumps({"format": FORMAT, "config": config.name, "cases": cases}))
    return path


def _is_cases_file(path):
    return json.loads(pathlib.Path(path).read_text()).get("format") == FORMAT


def read_cases(directory, count=None):
    """(config name, cases) of a run directory: one written by `mpq compile`
    (manifest.json; `count` golden images, all by default) or by
    `mpq fpga layers` (fpga_cases.json)."""
    directory = pathlib.Path(directory)
    if (directory / "manifest.json").exists():
        from sw.compile.artifacts import read_compiled
        network, manifest, golden = read_compiled(directory)
        return manifest["config"], cases_from_network(network, golden, count)
    path = directory / CASES_FILE
    if not path.exists():
        raise UserError(f"{directory}: neither a compiled network (manifest.json, from "
                        f"`mpq compile MODEL -o DIR`) nor {CASES_FILE} (from `mpq fpga layers`)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"{path}: not readable JSON ({error}); rewrite it with "
                        "`mpq fpga layers -o DIR`") from None
    _check_cases(data, path)
    cases = data["cases"] if count is None else data["cases"][:count]
    return data["config"], cases


def _check_cases(data, path):
    """Every field `run_cases` reads, with the field named when it is wrong."""
    from hw.config import CONFIGS

    def fail(field, rule):
        raise UserError(f"{path}: field `{field}` {rule}; rewrite the file with "
                        "`mpq fpga layers -o DIR`")

    def is_int(value):
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(data, dict):
        fail("(top)", "must be a JSON object")
    if data.get("format") != FORMAT:
        fail("format", f"is {data.get('format')!r}, expected {FORMAT!r}")
    if data.get("config") not in CONFIGS:
        fail("config", f"must name a configuration ({', '.join(sorted(CONFIGS))})")
    if not isinstance(data.get("cases"), list):
        fail("cases", "must be a list")
    for index, case in enumerate(data["cases"]):
        where = f"cases[{index}]"
        if not isinstance(case, dict) or not isinstance(case.get("name"), str):
            fail(where, "must be an object with a string `name`")
        if not isinstance(case.get("phases"), list):
            fail(f"{where}.phases", "must be a list")
        for number, phase in enumerate(case["phases"]):
            if not isinstance(phase, list) or not all(
                    isinstance(seg, list) and len(seg) == 4 and all(map(is_int, seg[:3]))
                    and isinstance(seg[3], list) and all(map(is_int, seg[3])) for seg in phase):
                fail(f"{where}.phases[{number}]", "must be a list of [memory, bank, start, "
                     "[words]] segments of integers")
        if not isinstance(case.get("outputs"), list):
            fail(f"{where}.outputs", "must be a list")
        for number, output in enumerate(case["outputs"]):
            field = f"{where}.outputs[{number}]"
            if not isinstance(output, dict) or output.get("memory") not in ("activations", "results"):
                fail(f"{field}.memory", "must be 'activations' or 'results'")
            if not is_int(output.get("base")) or output["base"] < 0:
                fail(f"{field}.base", "must be an integer >= 0")
            shape = output.get("shape")
            if not isinstance(shape, list) or len(shape) != 3 or \
                    not all(is_int(v) and v >= 1 for v in shape):
                fail(f"{field}.shape", "must be [channels, height, width] positive integers")
            try:
                expected = np.asarray(output.get("expected"), dtype=np.int64)
            except (TypeError, ValueError, OverflowError):
                expected = None
            if expected is None or expected.shape != tuple(shape):
                fail(f"{field}.expected", f"must be integers of shape {shape}")


async def run_case(link, case, *, wait_timeout, poll):
    """One case on the board (or the simulated board). Returns a result dict."""
    config = link.config
    if case["config"] != config.name:
        raise UserError(f"case {case['name']!r} was compiled for configuration "
                        f"{case['config']!r}; the link's is {config.name!r}")
    started = time.perf_counter()
    timings = {"load_s": 0.0, "run_s": 0.0}
    counters = {}
    await link.reset()
    for segments in case["phases"]:
        loading = time.perf_counter()
        await link.load([(mem, bank, start, words) for mem, bank, start, words in segments])
        running = time.perf_counter()
        await link.start()
        await link.wait(wait_timeout, poll)
        timings["load_s"] += running - loading
        timings["run_s"] += time.perf_counter() - running
        for key, value in (await link.counters()).items():
            counters[key] = counters.get(key, 0) + value
    status = await link.status()
    outputs, mismatches = [], {}
    for output in case["outputs"]:
        entries = [await link.read_memory(mem, bank, start, count)
                   for mem, bank, start, count in readback_ranges(output, config)]
        got = decode_output(output, config, entries)
        expected = np.asarray(output["expected"], dtype=np.int64)
        wrong = int(np.count_nonzero(got != expected))
        if wrong:
            index = tuple(int(i) for i in np.argwhere(got != expected)[0])
            mismatches[output["name"]] = {"wrong": wrong, "first": list(index),
                                          "got": int(got[index]), "expected": int(expected[index])}
        outputs.append(got.tolist())
    timings["total_s"] = time.perf_counter() - started
    # The core's counters are config.counter_width bits wide and wrap: the
    # sum of the phases' readings matches the golden count modulo 2 ** width.
    # A configuration without counters (config.counters False) has only
    # `cycles`: the others read 0 and are not compared.
    width = config.counter_width
    counters = {key: counter_reading(value, width) for key, value in counters.items()}
    compared = compared_counters(config)
    wrong_counters = {key: [counters.get(key), counter_reading(value, width)]
                      for key, value in (case.get("expected_counters") or {}).items()
                      if key in compared and counters.get(key) != counter_reading(value, width)}
    return {"name": case["name"], "status": status, "counters": counters, "outputs": outputs,
            "mismatches": mismatches,
            "bit_exact": not mismatches and status["done"] and not status["error"],
            "counters_match": not wrong_counters, "wrong_counters": wrong_counters,
            "counters_compared": list(compared), "timings": timings}


def compared_counters(config):
    """The counters the core of `config` has (and the host compares)."""
    return COUNTERS if config.counters else COUNTERS[:1]


async def run_cases(link, cases, *, wait_timeout, poll, log=print):
    results = []
    for case in cases:
        result = await run_case(link, case, wait_timeout=wait_timeout, poll=poll)
        wrong = sum(m["wrong"] for m in result["mismatches"].values())
        log(f"{result['name']}: {'bit-exact' if result['bit_exact'] else 'MISMATCH'} "
            f"({wrong} wrong outputs, {result['counters']['cycles']} cycles"
            f"{'' if result['counters_match'] else ', counters differ'}"
            f"{'' if len(result['counters_compared']) > 1 else '; only cycles compared: no counters'})")
        results.append(result)
    return results
