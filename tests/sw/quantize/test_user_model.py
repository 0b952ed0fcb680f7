"""`mpq train --model PATH.py:NAME`: the user's own network, what it is called
with, what the checkpoint records to rebuild it, and a one-line error naming
what is wrong (the user's own line for their errors), nothing written."""

import os
import shutil
import sys
import textwrap

import pytest
import torch

from common.errors import UserError
from sw.cli import main
from sw.quantize import user_model
from sw.quantize.data import load_digits
from sw.quantize.models import build_model
from sw.quantize.train import TrainConfig, load_checkpoint, network_from_checkpoint, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
RESNET = os.path.join(ROOT, "tests", "data", "user_models", "torchvision_resnet.py")
QUICK = ["--dataset", "digits", "--epochs", "1", "--limit-train", "64", "--limit-test", "32",
         "--no-progress"]


def _write(folder, name, text):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def _refusal(capsys, *args):
    assert main(["train", *args]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mpq train: error: ") and error.count("\n") == 1, error
    assert "Traceback" not in error
    return error


def _config(out, model, **changes):
    base = dict(model=model, dataset="digits", epochs=2, batch_size=32, limit_train=96,
                limit_test=32, device="cpu", progress=False, out=str(out))
    return TrainConfig(**dict(base, **changes))


def test_the_torchvision_style_resnet_is_built_with_the_data_sets_classes_and_channels():
    network = build_model(f"{RESNET}:tiny_resnet", 1.0, load_digits())
    body = network.tiny_resnet
    assert body.conv1.in_channels == 1 and body.fc.out_features == 10
    assert [stage[0].conv2.out_channels for stage in body.layers] == [5, 7, 11]
    assert network(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_only_the_parameters_the_callable_has_are_passed(tmp_path):
    path = _write(tmp_path, "nets.py", """
        import torch.nn as nn
        CALLS = []
        def bare():
            CALLS.append({})
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        def sized(num_classes, width=1.0, depth=2):
            CALLS.append({"num_classes": num_classes, "width": width})
            return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))
        """)
    data = load_digits()
    build_model(f"{path}:bare", 1.0, data)
    build_model(f"{path}:sized", 1.0, data)        # width 1: not passed
    build_model(f"{path}:sized", 0.5, data)
    bare = user_model._load(user_model.locate(f"{path}:bare"))
    calls = sys.modules[bare.__module__].CALLS
    assert calls == [{}, {"num_classes": 10, "width": 1.0}, {"num_classes": 10, "width": 0.5}]
    assert not (tmp_path / "__pycache__").exists()   # nothing left in the user's folder


def test_a_module_name_works_too():
    model = user_model.locate("tests.data.user_models.torchvision_resnet:tiny_resnet")
    assert model.path == RESNET
    network = user_model.build(model.spec, 10, 1)
    assert network.fc.out_features == 10


@pytest.mark.parametrize("spec,fragments", [
    ("nothere.py:net", ["no file", "nothere.py"]),
    ("{resnet}:nope", ["defines no 'nope'", "tiny_resnet", "ResNet"]),
    ("{resnet}:ResNet", ["ResNet needs block, layers", "def my_net"]),
    ("{resnet}:9lives", ["PATH.py:NAME"]),
    ("no_such_package.nets:net", ["no module 'no_such_package.nets'"]),
    ("tiny_resnet", ["choose one of", "PATH.py:NAME"]),
    ("{folder}/broken.py:net", ["importing the file failed: NameError",
                                "broken.py, line 3: `LAYERS = undefined_name * 2`"]),
    ("{folder}/syntax.py:net", ["SyntaxError", "syntax.py, line 1"]),
    ("{folder}/nets.py:crash", ["calling crash(num_classes=10, in_channels=1) failed: ValueError",
                                "nets.py, line 12: `return nn.Conv2d(in_channels, 2, 3, groups=5)`"]),
    ("{folder}/nets.py:not_a_module", ["returned a list, not a torch nn.Module"]),
    ("{folder}/nets.py:NUMBER", ["NUMBER is a int, not a class or function"]),
    ("{folder}/nets.py:Grouped", ["cannot map", "`Grouped.dw` (Conv2d)", "grouped or depthwise"]),
])
def test_bad_models_are_named_and_nothing_is_written(tmp_path, capsys, spec, fragments):
    folder = tmp_path / "mine"
    folder.mkdir()
    _write(folder, "broken.py", """
        import torch
        LAYERS = undefined_name * 2
        """)
    _write(folder, "syntax.py", "def net(:\n    pass\n")
    _write(folder, "nets.py", """
        import torch.nn as nn
        NUMBER = 3
        class Grouped(nn.Module):
            def __init__(self, num_classes=10):
                super().__init__()
                self.stem, self.dw = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, groups=4)
                self.fc = nn.Linear(4, num_classes)
            def forward(self, x):
                return self.fc(self.dw(self.stem(x).relu()).relu().mean((2, 3)))
        def crash(num_classes, in_channels):
            return nn.Conv2d(in_channels, 2, 3, groups=5)
        def not_a_module(num_classes=10):
            return [num_classes]
        """)
    out = tmp_path / "out"
    error = _refusal(capsys, "--model", spec.format(resnet=RESNET, folder=folder), *QUICK,
                     "--out", str(out))
    for fragment in fragments:
        assert fragment in error, error
    assert not out.exists()
    assert sorted(os.listdir(folder)) == ["broken.py", "nets.py", "syntax.py"]


def test_width_needs_a_width_parameter(capsys, tmp_path):
    error = _refusal(capsys, "--model", f"{RESNET}:tiny_resnet", "--width", "0.5", *QUICK,
                     "--out", str(tmp_path / "out"))
    assert "--width 0.5: tiny_resnet takes no `width` parameter" in error


def test_the_checkpoint_rebuilds_the_network_from_any_folder(tmp_path, monkeypatch):
    copy = tmp_path / "nets" / "resnet.py"
    copy.parent.mkdir()
    shutil.copy(RESNET, copy)
    monkeypatch.chdir(copy.parent)
    train(_config(tmp_path / "run", "resnet.py:tiny_resnet", stop_after_epoch=0))
    spec = load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))["spec"]
    assert spec["model"] == f"{copy}:tiny_resnet"
    assert spec["model_sha256"] == user_model.locate(spec["model"]).sha256()
    monkeypatch.chdir(tmp_path)                     # --resume from elsewhere: the same run
    train(_config(tmp_path / "run", "nets/resnet.py:tiny_resnet", resume=True))
    network, _ = network_from_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))
    assert network(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_a_changed_or_missing_file_is_reported(tmp_path, capsys):
    copy = tmp_path / "resnet.py"
    shutil.copy(RESNET, copy)
    train(_config(tmp_path / "run", f"{copy}:tiny_resnet", epochs=1))
    checkpoint = str(tmp_path / "run" / "checkpoint.pt")
    copy.write_text(copy.read_text() + "\n# a comment: same network\n")
    network_from_checkpoint(checkpoint)
    assert "has changed since the checkpoint was written" in capsys.readouterr().err
    copy.write_text(copy.read_text().replace("widths=(5, 7, 11)", "widths=(5, 7, 12)"))
    with pytest.raises(UserError, match="weights do not fit the network .* changed since"):
        network_from_checkpoint(checkpoint)
    copy.unlink()
    with pytest.raises(UserError, match="no longer there: put the file back"):
        network_from_checkpoint(checkpoint)
