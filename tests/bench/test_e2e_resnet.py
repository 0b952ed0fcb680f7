"""bench/e2e_resnet.py's bookkeeping: models measured at different times
merge into one results file, a file that is not its own stops a run before
any simulation, and the inputs that would make a wrong entry are refused.
(The RTL run itself is sim.commands.simulate, tested in tests/sim.)"""

import json

import pytest
import torch

from bench import e2e_resnet
from common.errors import UserError
from sw.quantize.config import parse_precision
from sw.quantize.convert import calibrate, quantize_network
from sw.quantize.export import write_model_file
from sw.quantize.resnet import resnet20


def entry(cycles, bit_exact=True):
    layers = [{"name": f"1.layer{i}", "cycles": cycles // 2, "utilization": 0.5,
               "energy_uj": 1.0, "compute_uj": 0.25, "on_chip_memory_uj": 0.75} for i in (1, 2)]
    return {"command": f"run {cycles}", "images": 4, "bit_exact": bit_exact,
            "cycles_per_inference": cycles, "energy_uj_per_inference": 2.5, "layers": layers}


def test_models_measured_apart_share_one_file(tmp_path):
    out = tmp_path / "e2e_resnet.json"
    assert e2e_resnet.merge(out, {"resnet20": entry(20)}) == {"resnet20": entry(20)}
    out.write_text(json.dumps({"resnet20": entry(20), "resnet8": entry(8)}))
    merged = e2e_resnet.merge(out, {"resnet8": entry(9), "resnet8_mpq": entry(7)})
    # Replaced, kept and added; in the bench's order, whatever the file's.
    assert merged == {"resnet8": entry(9), "resnet20": entry(20), "resnet8_mpq": entry(7)}
    assert list(merged) == ["resnet8", "resnet20", "resnet8_mpq"]
    e2e_resnet.plot(merged, tmp_path / "e2e_resnet.png")
    assert (tmp_path / "e2e_resnet.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("content, fragment", [
    ("not json", "not a results file"),
    (json.dumps({"networks": {}}), "expected some of resnet8"),
    (json.dumps([1, 2]), "list"),
])
def test_a_foreign_results_file_stops_the_run_untouched(tmp_path, content, fragment):
    out = tmp_path / "e2e_resnet.json"
    out.write_text(content)
    with pytest.raises(UserError, match=fragment):
        e2e_resnet.main(["--resnet8", str(tmp_path / "absent.mpq"), "--data", str(tmp_path),
                         "--out", str(out)])
    assert out.read_text() == content
    assert not (tmp_path / "e2e_resnet.png").exists()


def test_a_model_file_of_another_network_is_refused(tmp_path):
    torch.manual_seed(0)
    network = quantize_network(resnet20(width=0.25), parse_precision("w4a4"), (3, 8, 8))
    calibrate(network, torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8))
    path = tmp_path / "r20.mpq"
    write_model_file(network.eval(), str(path), {"model": "resnet20", "dataset": "cifar10"})
    e2e_resnet.check_model("resnet20", path)
    with pytest.raises(UserError, match="holds resnet20, not resnet8"):
        e2e_resnet.check_model("resnet8_mpq", path)


def test_integer_accuracy_from_mpq_eval_or_a_protocol_row(tmp_path):
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({"kind": "integer", "accuracy": 0.81, "images": 10000}))
    row = tmp_path / "row.json"
    row.write_text(json.dumps({"integer_accuracy": 0.79, "test_images": 10000}))
    assert e2e_resnet.integer_accuracy(evaluation)["accuracy"] == 0.81
    assert e2e_resnet.integer_accuracy(row) == {"accuracy": 0.79, "images": 10000,
                                                "source": str(row)}
    evaluation.write_text(json.dumps({"kind": "float", "accuracy": 0.82, "images": 10000}))
    with pytest.raises(UserError, match="float evaluation"):
        e2e_resnet.integer_accuracy(evaluation)


def test_arguments_name_what_is_missing(capsys):
    for argv, fragment in ((["--data", "d"], "at least one model"),
                           (["--resnet8", "m.mpq"], "--data"),
                           (["--resnet8", "m.mpq", "--data", "d", "--eval-json", "resnet20=e.json"],
                            "KEY one of the models measured (resnet8)")):
        with pytest.raises(SystemExit):
            e2e_resnet.parse_args(argv)
        assert fragment in capsys.readouterr().err
    args = e2e_resnet.parse_args(["--resnet8-mpq", "m.mpq", "--data", "d",
                                  "--eval-json", "resnet8_mpq=row.json"])
    assert args.models == {"resnet8_mpq": "m.mpq"} and args.evals == {"resnet8_mpq": "row.json"}
    assert args.jobs == 2 and args.images == 100
