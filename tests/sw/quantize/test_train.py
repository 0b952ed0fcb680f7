import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sw.cli import main
from sw.quantize.train import TrainConfig, load_checkpoint, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _config(out, **changes):
    base = dict(model="digits-cnn", dataset="digits", width=0.5, epochs=3, batch_size=32,
                limit_train=192, limit_test=64, seed=1, device="cpu", progress=False, out=str(out))
    base.update(changes)
    return TrainConfig(**base)


def _assert_same_weights(path_a, path_b):
    a, b = load_checkpoint(path_a)["model"], load_checkpoint(path_b)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture
def float_checkpoint(tmp_path):
    train(_config(tmp_path / "float", epochs=2))
    return str(tmp_path / "float" / "checkpoint.pt")


def test_log_and_checkpoint_every_epoch(tmp_path):
    train(_config(tmp_path / "run"))
    lines = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert {"train_loss", "test_accuracy", "seconds"} <= set(lines[0])
    assert load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))["epoch"] == 2


def test_a_log_file_this_command_did_not_write_is_never_replaced(tmp_path):
    from common.errors import UserError
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text("my own notes\n")
    with pytest.raises(UserError, match="not a training log"):
        train(_config(out, epochs=1))
    assert (out / "log.jsonl").read_text() == "my own notes\n" and not (out / "checkpoint.pt").exists()
    # an earlier run's log without its checkpoint (killed in its first epoch) is replaced
    (out / "log.jsonl").write_text(json.dumps({"epoch": 1, "seconds": 1.0}) + "\n")
    train(_config(out, epochs=1))
    assert [json.loads(line)["epoch"] for line in open(out / "log.jsonl")] == [1]
    assert "train_loss" in json.loads(open(out / "log.jsonl").readline())


@pytest.mark.parametrize("precision", ["float", "w4a4"])
def test_resume_after_stop_gives_the_same_weights(tmp_path, float_checkpoint, precision):
    init = None if precision == "float" else float_checkpoint
    train(_config(tmp_path / "straight", precision=precision, init=init))
    train(_config(tmp_path / "resumed", precision=precision, init=init, stop_after_epoch=0))
    assert load_checkpoint(str(tmp_path / "resumed" / "checkpoint.pt"))["epoch"] == 0
    train(_config(tmp_path / "resumed", precision=precision, init=init, resume=True))
    _assert_same_weights(tmp_path / "straight" / "checkpoint.pt", tmp_path / "resumed" / "checkpoint.pt")
    straight = open(tmp_path / "straight" / "log.jsonl").read().splitlines()
    resumed = open(tmp_path / "resumed" / "log.jsonl").read().splitlines()
    assert [json.loads(line)["train_loss"] for line in straight] == \
        [json.loads(line)["train_loss"] for line in resumed]


def test_resume_with_other_settings_is_refused(tmp_path):
    train(_config(tmp_path / "run", stop_after_epoch=0))
    assert main(["train", "--model", "digits-cnn", "--dataset", "digits", "--epochs", "5",
                 "--out", str(tmp_path / "run"), "--resume", "--no-progress"]) == 2


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "sw.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, **kwargs)


TRAIN_ARGS = ["train", "--model", "digits-cnn", "--dataset", "digits", "--width", "0.5",
              "--limit-train", "512", "--limit-test", "64", "--batch-size", "16", "--epochs", "4",
              "--device", "cpu", "--threads", "1", "--no-progress", "--seed", "3"]


@pytest.mark.slow
def test_killed_and_resumed_run_matches(tmp_path):
    straight = _cli(*TRAIN_ARGS, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "sw.cli", *TRAIN_ARGS, "--out", str(out)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert load_checkpoint(str(checkpoint))["epoch"] < 3, "killed too late to test a resume"
    resumed = _cli(*TRAIN_ARGS, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_weights(tmp_path / "straight" / "checkpoint.pt", checkpoint)


@pytest.mark.slow
def test_ddp_with_gloo_and_two_processes(tmp_path, float_checkpoint):
    out = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "sw.cli", "train", "--model", "digits-cnn", "--dataset", "digits", "--width", "0.5",
         "--limit-train", "192", "--limit-test", "64", "--batch-size", "32", "--epochs", "2",
         "--device", "cpu", "--threads", "1", "--no-progress", "--seed", "1",
         "--precision", "w4a4", "--init", float_checkpoint, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [line["epoch"] for line in lines] == [1, 2] and lines[0]["processes"] == 2
    assert _cli("export", str(out / "checkpoint.pt"), "-o", str(out / "model.mpq")).returncode == 0
    evaluated = _cli("eval", str(out / "model.mpq"), "--dataset", "digits", "--limit-test", "64")
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["kind"] == "integer"


def test_cli_train_export_eval_on_digits(tmp_path, capsys):
    float_out, qat_out = str(tmp_path / "float"), str(tmp_path / "w4a4")
    common = ["--model", "digits-cnn", "--dataset", "digits", "--width", "0.5", "--limit-train", "256",
              "--no-progress", "--device", "cpu"]
    assert main(["train", *common, "--epochs", "2", "--out", float_out]) == 0
    assert main(["train", *common, "--epochs", "1", "--precision", "w4a4,first=w8,last=w8",
                 "--init", f"{float_out}/checkpoint.pt", "--lr", "0.01", "--out", qat_out]) == 0
    model = str(tmp_path / "model.mpq")
    assert main(["export", f"{qat_out}/checkpoint.pt", "-o", model]) == 0
    capsys.readouterr()
    assert main(["eval", model, "--dataset", "digits", "--json", str(tmp_path / "eval.json")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "integer" and result["images"] == 360 and result["accuracy"] > 0.5
    assert main(["eval", f"{qat_out}/checkpoint.pt", "--dataset", "digits"]) == 0
    # A float checkpoint cannot be exported; errors exit 2 without a traceback.
    assert main(["export", f"{float_out}/checkpoint.pt", "-o", str(tmp_path / "x.mpq")]) == 2
    assert main(["eval", model, "--dataset", "cifar10", "--data", str(tmp_path)]) == 2
    assert "no CIFAR-10 data set" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_on_cifar_layout(tmp_path, capsys):
    sys.path.insert(0, os.path.dirname(__file__))
    from test_data import write_fake_cifar
    write_fake_cifar(str(tmp_path / "cifar"), per_batch=16)
    common = ["--model", "vgg9", "--dataset", "cifar10", "--data", str(tmp_path / "cifar"),
              "--width", "0.0625", "--batch-size", "16", "--no-progress", "--device", "cpu"]
    assert main(["train", *common, "--epochs", "1", "--out", str(tmp_path / "f")]) == 0
    assert main(["train", *common, "--epochs", "1", "--precision", "w4a4", "--init",
                 str(tmp_path / "f" / "checkpoint.pt"), "--out", str(tmp_path / "q")]) == 0
    assert main(["export", str(tmp_path / "q" / "checkpoint.pt"), "-o", str(tmp_path / "m.mpq")]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "m.mpq"), "--dataset", "cifar10", "--data",
                 str(tmp_path / "cifar")]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 16


def test_progress_reaches_a_log_as_lines_and_every_step_is_reported(tmp_path, capsys, monkeypatch):
    """Not a terminal (captured stderr): whole lines while an epoch runs, no
    carriage returns; `on_step` hears every step."""
    monkeypatch.setattr("common.progress.LINE_INTERVAL", 0.01)
    heard = []

    def on_step(*position):
        heard.append(position)
        time.sleep(0.02)    # a step long enough for the progress line to come round

    train(_config(tmp_path / "run", epochs=2, progress=True), on_step=on_step)
    assert heard == [(epoch, step, 6) for epoch in (1, 2) for step in range(1, 7)]  # 192 / 32
    error = capsys.readouterr().err
    assert "\r" not in error
    lines = error.splitlines()
    assert any(line.startswith("epoch 1/2: ") and "/6 [" in line for line in lines)
    assert any(line.startswith("epoch 2/2: loss") for line in lines)
