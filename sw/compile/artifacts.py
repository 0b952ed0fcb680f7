"""The compiled-network directory `mpq compile` writes and `mpq sim` (and the
FPGA host) reads. Written all or nothing; byte-identical for the same inputs.

    DIR/manifest.json      layers, phases, regions, expected counters, hashes
    DIR/model.mpq          the model file it was compiled from
    DIR/phase<p>/<memory>_bank<b>.hex   $readmemh text (sparse, @address lines)
    DIR/phase<p>/<memory>_bank<b>.bin   raw entries, little-endian, ceil(width/8)
                                        bytes each, addresses 0 .. last
    DIR/golden.npz         `inputs` (N, C, H, W) uint8 and `layer<i>` outputs
                           (N, ...) of the golden model on those inputs (the
                           layers whose output survives a run: `checked`)
"""

import hashlib
import json
import pathlib

import numpy as np

from common.errors import UserError
from common.files import check_output_directory, replacing_directory
from hw.config import get_config
from sw.compile.images import readmemh_text, sparse
from sw.compile.network import compile_network, manifest_json
from sw.quantize.export import read_model_file


def _bank_bytes(bank, width):
    entries = sparse(bank)
    size = (width + 7) // 8
    if not entries:
        return b""
    data = bytearray(size * (max(entries) + 1))
    for address, value in entries.items():
        data[address * size:(address + 1) * size] = int(value).to_bytes(size, "little")
    return bytes(data)


def phase_files(network, number):
    """{relative path: bytes} of one phase's static images."""
    files = {}
    for mem, (name, _, width, _) in network.config.memory_shapes().items():
        for index, bank in enumerate(network.phases[number].images.get(mem, [])):
            if not sparse(bank):
                continue
            stem = f"phase{number}/{name}_bank{index}"
            files[f"{stem}.hex"] = readmemh_text(sparse(bank), width).encode()
            files[f"{stem}.bin"] = _bank_bytes(bank, width)
    return files


def write_compiled(model_path, config_name, out_dir, golden_inputs, progress=None, force=False):
    """Compile `model_path` and write `out_dir` (replaced as a whole, under
    the rules of common/files.py: `force` replaces a folder it did not write)."""
    # Refuse a bad output folder before the compile's work, not after it.
    check_output_directory(out_dir, "compile", inputs=[model_path], force=force)
    config = get_config(config_name)
    header, arrays = read_model_file(model_path)
    network = compile_network(header, arrays, config, progress=progress)
    golden_inputs = np.asarray(golden_inputs, dtype=np.uint8)
    runs = [network.run_golden(x) for x in golden_inputs]
    outputs = [run[0] for run in runs]
    if runs:
        network.manifest["expected_counters_per_inference"] = runs[0][1]

    files = {}
    for number in range(len(network.phases)):
        files.update(phase_files(network, number))
    files["model.mpq"] = pathlib.Path(model_path).read_bytes()
    golden = {"inputs": golden_inputs}
    for index in range(len(network.layers)):
        if not network.checked[index]:
            continue   # overwritten by a later layer's map: nothing to compare
        golden[f"layer{index}"] = np.stack([out[index] for out in outputs])
    buffer = _npz_bytes(golden)
    files["golden.npz"] = buffer
    network.manifest["files"] = {path: hashlib.sha256(data).hexdigest()
                                 for path, data in sorted(files.items())}
    network.manifest["golden_images"] = len(golden_inputs)
    files["manifest.json"] = manifest_json(network).encode()

    with replacing_directory(out_dir, "compile", inputs=[model_path], force=force) as staging:
        for path, data in files.items():
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / path).write_bytes(data)
    return network


def _npz_bytes(arrays):
    import io
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_compiled(directory):
    """(network, manifest, golden) of a compiled directory, checked against
    its manifest: the model is recompiled and must give the same files."""
    directory = pathlib.Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"{directory} is not a compiled network (no manifest.json); "
                        "run `mpq compile MODEL -o DIR` first")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{manifest_path}: not valid JSON ({error})") from None
    for field in ("config", "files", "version"):
        if field not in manifest:
            raise UserError(f"{manifest_path}: field `{field}` is missing")
    for path, digest in manifest["files"].items():
        target = directory / path
        if not target.is_file():
            raise UserError(f"{directory}: {path} is missing; recompile with `mpq compile`")
        if hashlib.sha256(target.read_bytes()).hexdigest() != digest:
            raise UserError(f"{directory}: {path} does not match manifest.json (corrupt or "
                            "edited); recompile with `mpq compile`")
    try:
        config = get_config(manifest["config"])
    except UserError as error:   # say where the name came from
        raise UserError(f"{manifest_path}: `config`: {error}; recompile with `mpq compile`") from None
    header, arrays = read_model_file(directory / "model.mpq")
    network = compile_network(header, arrays, config)
    for number in range(len(network.phases)):
        for path, data in phase_files(network, number).items():
            if manifest["files"].get(path) != hashlib.sha256(data).hexdigest():
                raise UserError(f"{directory}: recompiling model.mpq does not reproduce {path}; "
                                "the directory comes from another compiler version: recompile")
    with np.load(directory / "golden.npz") as data:
        golden = {key: data[key] for key in data.files}
    return network, manifest, golden
