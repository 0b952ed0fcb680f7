"""What the `mpq` command does with bad input: a refusal that names what is
wrong (exit 2), never a traceback, never a deleted or half-written file;
Ctrl-C exits 130; `--help` loads nothing heavy."""

import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sw import cli
from sw.cli import main
from tests.sim.conftest import make_model_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _mpq(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "sw.cli", *args], cwd=kwargs.pop("cwd", ROOT),
                          capture_output=True, text=True, **kwargs)


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _exit_code(args):
    """main()'s status, or argparse's (it exits with 2 on a bad option)."""
    try:
        return main(args)
    except SystemExit as stop:
        return stop.code


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model_file(tmp_path_factory.mktemp("model") / "w4a4.mpq")


@pytest.fixture(scope="module")
def compiled(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled") / "small"
    assert main(["compile", str(model), "--config", "small", "-o", str(out)]) == 0
    return out


@pytest.fixture
def scratch(tmp_path, model, monkeypatch):
    """A folder of the user's: their notes and their model."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    (folder / "mine.txt").write_text("my notes")
    (folder / "w4a4.mpq").write_bytes(model.read_bytes())
    monkeypatch.chdir(folder)
    return folder


# -- 1. an output folder is replaced only when it is the command's own ---------------------
@pytest.mark.parametrize("out", [".", "", "..", "users_folder"])
def test_compile_refuses_folders_it_did_not_write_and_deletes_nothing(scratch, capsys, out):
    users = scratch / "users_folder"
    users.mkdir()
    (users / "data.csv").write_text("1,2")
    before = _tree(scratch)
    assert main(["compile", "w4a4.mpq", "--config", "small", "-o", out]) == 2
    assert _tree(scratch) == before
    error = capsys.readouterr().err
    assert error.startswith("mpq compile: error: -o") and "Traceback" not in error
    assert error.count("\n") == 1


def test_compile_refuses_the_models_own_folder_even_with_force(scratch, capsys):
    before = _tree(scratch)
    assert main(["compile", str(scratch / "w4a4.mpq"), "--config", "small", "-o",
                 str(scratch), "--force"]) == 2
    assert "holds the input" in capsys.readouterr().err
    assert _tree(scratch) == before


def test_compile_replaces_its_own_output_and_force_replaces_a_folder(scratch):
    out = scratch / "compiled"
    assert main(["compile", "w4a4.mpq", "--config", "small", "-o", str(out)]) == 0
    (out / "stale.txt").write_text("stale")
    assert main(["compile", "w4a4.mpq", "--config", "small", "-o", str(out)]) == 0
    assert not (out / "stale.txt").exists() and (out / "manifest.json").exists()
    users = scratch / "users_folder"
    users.mkdir()
    (users / "data.csv").write_text("1,2")
    assert main(["compile", "w4a4.mpq", "--config", "small", "-o", str(users), "--force"]) == 0
    assert (users / "manifest.json").exists() and not (users / "data.csv").exists()


@pytest.mark.parametrize("command", [["verilog", "--config", "small", "-o"], ["report", "-o"],
                                     ["demo", "--epochs", "1", "--out"],
                                     ["fpga", "bitstream", "--board", "icebreaker", "-o"]])
def test_other_writing_commands_refuse_a_folder_of_the_users(scratch, capsys, command):
    before = _tree(scratch)
    for out in (".", str(scratch)):
        assert main(command + [out]) == 2
    assert _tree(scratch) == before
    assert "Traceback" not in capsys.readouterr().err


def test_report_refuses_to_replace_its_own_results_folder(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "pe_cost.json").write_text("{}")
    assert main(["report", "--results", str(results), "-o", str(results), "--force"]) == 2
    assert (results / "pe_cost.json").exists()


# -- 3. no traceback: every bad input is an error that names it -----------------------------
def test_an_output_path_that_is_a_file_or_cannot_be_made(scratch, capsys):
    assert main(["compile", "w4a4.mpq", "--config", "small", "-o", "mine.txt"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["compile", "w4a4.mpq", "--config", "small", "-o", "mine.txt/out"]) == 2
    assert "cannot create" in capsys.readouterr().err
    assert (scratch / "mine.txt").read_text() == "my notes"


@pytest.mark.parametrize("args", [
    ["compile", "w4a4.mpq", "--config", "small", "-o", "out", "--golden-images", "0"],
    ["compile", "w4a4.mpq", "--config", "nonesuch", "-o", "out"],
    ["sim", "compiled", "--images", "0"],
    ["sim", "compiled", "--images", "-1"],
    ["sim", "compiled", "--stall", "1.5"],
    ["eval", "w4a4.mpq", "--limit-test", "0"],
    ["eval", "w4a4.mpq", "--limit-test", "-1"],
    ["train", "--batch-size", "0"],
    ["train", "--width", "0"],
    ["train", "--epochs", "-3"],
    ["train", "--lr", "nan"],
    ["demo", "--images", "0"],
], ids=lambda args: " ".join(args[:1] + args[-2:]))
def test_nonsense_numbers_are_refused_by_the_parser(scratch, capsys, args):
    assert _exit_code(args) == 2
    error = capsys.readouterr().err
    assert "error: argument" in error and "Traceback" not in error
    assert not (scratch / "out").exists()


def test_sim_of_a_digits_network_on_cifar10_names_the_mismatch(compiled, tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch))
    assert main(["sim", str(compiled), "--dataset", "cifar10", "--data", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "(1, 8, 8)" in error and "(3, 32, 32)" in error


def test_sim_does_not_suggest_an_option_it_lacks(compiled, tmp_path, capsys):
    assert main(["sim", str(compiled), "--dataset", "cifar10", "--data", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "no CIFAR-10 data set" in error and "pass --download" not in error


def test_train_resume_without_a_checkpoint_and_restart_over_one(tmp_path, capsys):
    out = tmp_path / "run"
    quick = ["train", "--epochs", "1", "--limit-train", "64", "--limit-test", "32",
             "--width", "0.25", "--device", "cpu", "--no-progress", "--out", str(out)]
    assert main(quick + ["--resume"]) == 2
    assert "holds no checkpoint.pt" in capsys.readouterr().err
    assert main(quick) == 0
    checkpoint = (out / "checkpoint.pt").read_bytes()
    assert main(quick) == 2
    error = capsys.readouterr().err
    assert "holds a checkpoint" in error and "--resume" in error and "--force" in error
    assert (out / "checkpoint.pt").read_bytes() == checkpoint
    assert main(quick + ["--force"]) == 0


# -- Ctrl-C and unexpected errors -------------------------------------------------------------
def test_ctrl_c_exits_130_in_one_line_and_keeps_no_output(scratch, capsys, monkeypatch):
    import sw.compile.artifacts

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sw.compile.artifacts, "compile_network", interrupted)
    before = _tree(scratch)
    assert main(["compile", "w4a4.mpq", "--config", "small", "-o", "out"]) == cli.INTERRUPTED
    assert _tree(scratch) == before
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "interrupted" in error


@pytest.mark.slow
def test_a_real_sigint_during_training_exits_130_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "sw.cli", "train", "--epochs", "200", "--width", "0.25",
         "--limit-test", "32", "--device", "cpu", "--threads", "1", "--no-progress",
         "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A job started in the background by a non-interactive shell (as CI may
        # start the suite) inherits SIGINT ignored; Python then never raises
        # KeyboardInterrupt. The test is about Ctrl-C, so give the child the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (out / "log.jsonl").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, error = process.communicate(timeout=60)
    assert process.returncode == 130, error
    assert "Traceback" not in error and error.strip().splitlines()[-1].endswith(
        "interrupted; no partial output was kept")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "log.jsonl"]
    from sw.quantize.train import load_checkpoint
    assert load_checkpoint(str(out / "checkpoint.pt"))["epoch"] >= 0


def test_an_unexpected_error_is_one_line_unless_debugging(scratch, capsys, monkeypatch):
    import sw.compile.artifacts

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(sw.compile.artifacts, "compile_network", broken)
    args = ["compile", "w4a4.mpq", "--config", "small", "-o", "out"]
    assert main(args) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "internal error" in error and "--debug" in error
    with pytest.raises(ZeroDivisionError):
        main(args + ["--debug"])
    monkeypatch.setenv("MPQ_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(args)
    assert not (scratch / "out").exists()


# -- 6. a quick start ---------------------------------------------------------------------------
HEAVY = ("torch", "amaranth", "cocotb", "numpy", "pytest")


def test_help_of_every_command_loads_nothing_heavy():
    # Loading torch alone takes 1-4 s; --help must not wait for it. Checked by
    # what is imported, not by a timer (bench/cli_start.py times it).
    script = ("import sys, contextlib, io\nfrom sw.cli import main, build_parser\n"
              "commands = [[]] + [[name] for name in build_parser()._subparsers._group_actions[0]"
              ".choices] + [['fpga', sub] for sub in ('bitstream', 'program', 'layers', 'run')]\n"
              "for command in commands:\n"
              "    with contextlib.redirect_stdout(io.StringIO()):\n"
              "        try: main(command + ['--help'])\n"
              "        except SystemExit as stop: assert stop.code == 0, (command, stop.code)\n"
              f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
              "print(len(commands))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    loaded, count = result.stdout.splitlines()
    assert loaded == "[]" and int(count) >= 14


def test_mpq_alone_prints_help_and_exits_2():
    result = _mpq()
    assert result.returncode == 2 and "COMMAND" in result.stderr


def test_help_lists_the_configurations_and_explains_training():
    compile_help = _mpq("compile", "--help").stdout
    assert "{default,ecp5,ice40,large,small}" in compile_help.replace("\n", "").replace(" ", "")
    train_help = _mpq("train", "--help").stdout
    for words in ("channel width multiplier", "--resume", "--force", "w4a4,first=w8,last=w8"):
        assert words in train_help


@pytest.mark.parametrize("text", ["{", "[1]", '{"format": "mpq-fpga-cases/1"}',
                                  '{"format": "mpq-fpga-cases/1", "config": "ice40", "cases": '
                                  '[{"name": "a", "phases": [[[1, 2]]], "outputs": []}]}',
                                  '{"format": "mpq-fpga-cases/1", "config": "ice40", "cases": '
                                  '[{"name": "a", "phases": [], "outputs": [{"memory": "results", '
                                  '"base": 0, "shape": [1, 1, 2], "expected": [[[1]]]}]}]}'])
def test_a_malformed_run_directory_is_named(tmp_path, capsys, text):
    (tmp_path / "fpga_cases.json").write_text(text)
    assert main(["fpga", "run", str(tmp_path), "--simulate"]) == 2
    error = capsys.readouterr().err
    assert "fpga_cases.json" in error and "Traceback" not in error


def test_single_file_outputs_never_overwrite_a_file_they_did_not_write(scratch, tmp_path, capsys):
    # export -o, eval --json, fpga layers: an existing file of the user's is
    # refused without --force; the command's own earlier output is replaced.
    checkpoint = tmp_path / "missing.pt"
    assert main(["export", str(checkpoint), "-o", "mine.txt"]) == 2
    assert "not written by `mpq export`" in capsys.readouterr().err
    assert main(["eval", "w4a4.mpq", "--limit-test", "8", "--json", "mine.txt"]) == 2
    assert (scratch / "mine.txt").read_text() == "my notes"
    assert main(["eval", "w4a4.mpq", "--limit-test", "8", "--json", "result.json"]) == 0
    assert main(["eval", "w4a4.mpq", "--limit-test", "8", "--json", "result.json"]) == 0
    assert main(["eval", "w4a4.mpq", "--limit-test", "8", "--json", "mine.txt", "--force"]) == 0
    (scratch / "cases").mkdir()
    (scratch / "cases" / "fpga_cases.json").write_text("my own file")
    assert main(["fpga", "layers", "-o", "cases", "--count", "1"]) == 2
    assert (scratch / "cases" / "fpga_cases.json").read_text() == "my own file"
