"""bench/mpq_paper.py: the protocol's plan, a runner that resumes (finished
rows skipped, a stopped row continued after its last epoch), and the report
(bench/mpq_report.py)."""

import dataclasses
import json
import os

import pytest
import torch

from bench import mpq_paper, mpq_report


@pytest.fixture
def keep_threads():
    """The runner sets torch's thread count (--threads); later tests keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_plan_puts_the_decisive_rows_first():
    args = mpq_paper.parse_args([])
    plan = mpq_paper.build_plan("vgg9_w0.25", args)
    assert [row.name for row in plan[:4]] == ["lsq/uniform-w4/s0", "lsq/uniform-w2/s0",
                                              "lsq/mpq-switching-25/s0", "lsq/mpq-random-25/s0"]
    names = [row.name for row in plan]
    assert len(names) == len(set(names))
    assert names.index("lsq/mpq-switching-100/s0") < names.index("lsq/uniform-w4/s1")   # sweep, then seeds
    assert {"lsq/uniform-w4/s2", "lsq/mpq-random-25/s2", "stats/mpq-switching-25/s1"} <= set(names)
    assert "lsq/mpq-fisher-25/s2" not in names           # 3 seeds only for the headline rows
    # The chunk-unit row (what the energy comparison needs) right after the decisive ones.
    assert names[4] == "lsq/chunkwise-switching-25/s0"
    assert {"lsq/chunkwise-switching-10/s0", "lsq/chunkwise-switching-50/s0"} <= set(names)
    assert mpq_paper.variant_config("chunkwise-switching-25", "lsq", 0, {
        "unit": "hardware", "lr_rule": "linear"}).granularity == "chunk"
    assert mpq_report.method_of("chunkwise-switching-25") == "chunkwise-switching"
    assert mpq_report.method_of("uniform-w3") == "uniform" and mpq_report.method_of("lrrule-w2") == "lrrule-w2"
    assert "lsq/chunkwise-random-10/s1" in names         # the chunk unit's control
    only = mpq_paper.selected(plan, ["stats/uniform-*"])
    assert {row.name for row in only} == {f"stats/uniform-w{b}/s{s}" for b in (2, 3, 4) for s in (0, 1, 2)}
    for row in plan:   # every variant is one the runner can build
        mpq_paper.variant_config(row.variant, row.quantizer, row.seed, {"unit": "hardware", "lr_rule": "linear"})


def test_an_ablation_changes_one_thing_of_the_variant_it_names(tmp_path, capsys):
    protocol = {"unit": "hardware", "lr_rule": "linear"}
    base = mpq_paper.variant_config("chunkwise-switching-10", "lsq", 0, protocol)
    early = mpq_paper.variant_config("chunkwise-switching-10+early+nolr", "lsq", 0, protocol)
    assert early.assign_at == (0.1,) and early.lr_rule is None
    assert dataclasses.replace(early, assign_at=base.assign_at, lr_rule=base.lr_rule) == base
    once = mpq_paper.variant_config("mpq-fisher-25+once", "stats", 1, protocol)
    assert once.assign_at == (0.3,) and once.lr_start == 0.3     # the rule after the (only) assignment
    assert once.criterion == "fisher" and once.weight_step == "statistics" and once.seed == 1
    assert mpq_paper.variant_config("mpq-switching-25+long", "lsq", 0, protocol).momentum == 0.999
    # dampening and freezing from the last assignment on (before it they would hide the oscillations)
    damped = mpq_paper.variant_config("chunkwise-switching-10+damp+freeze", "lsq", 0, protocol)
    assert (damped.dampen, damped.dampen_start) == (0.1, 0.6)
    assert (damped.freeze_threshold, damped.freeze_start) == (0.02, 0.6)
    assert dataclasses.replace(damped, dampen=0.0, dampen_start=0.0, freeze_threshold=None,
                               freeze_start=0.0) == base
    assert mpq_paper.variant_config("chunkwise-switching-10+early+damp", "lsq", 0, protocol).dampen_start == 0.1
    assert mpq_report.method_of("chunkwise-switching-10+early+nolr") == "chunkwise-switching+early+nolr"
    with pytest.raises(mpq_paper.UserError, match="nolr changes nothing"):   # no rule to drop
        mpq_paper.variant_config("mpq-switching-25+nolr", "lsq", 0, {"unit": "hardware", "lr_rule": "none"})
    for bad in ("uniform-w2+early", "mpq-switching-25+later", "mpq-switching-25+once+once", "lrrule-w2+once",
                "mpq-fisher-25+long", "mpq-random-10+once+early"):  # long: switching only
        with pytest.raises(mpq_paper.UserError, match="ablation"):
            mpq_paper.variant_config(bad, "lsq", 0, protocol)
    # asked for on the command line: refused before anything runs
    assert mpq_paper.main(["--model", "digits-cnn", "--state", str(tmp_path / "state"),
                           "--extra-variants", "mpq-switching-25+later"]) == 2
    assert "unknown ablation 'mpq-switching-25+later'" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()
    args = mpq_paper.parse_args(["--extra-variants", "chunkwise-switching-10+early"])
    assert "lsq/chunkwise-switching-10+early/s1" in [row.name for row in mpq_paper.build_plan("x", args)]


def test_the_runner_continues_a_stopped_row_and_skips_finished_ones(tmp_path, capsys, keep_threads):
    state = tmp_path / "state"
    common = ["--model", "digits-cnn", "--state", str(state), "--float-epochs", "1", "--qat-epochs", "2",
              "--train-images", "64", "--test-images", "50", "--seeds", "0", "--headline-seeds",
              "--quantizers", "lsq", "--threads", "1", "--only", "lsq/uniform-w2/s0", "lsq/mpq-switching-25/s0"]
    rows = state / "digits-cnn_w1" / "rows"
    partial = state / "digits-cnn_w1" / "partial"
    # out of time after the first epoch: the row stops there and keeps its state
    assert mpq_paper.main(common + ["--hours", "1e-9"]) == 0
    assert not list(rows.glob("*.json"))
    assert json.loads((partial / "lsq__uniform-w2__s0.json").read_text())["epochs_done"] == 1
    # one row: the stopped one, continued from its second epoch
    assert mpq_paper.main(common + ["--max-rows", "1"]) == 0
    done = rows / "lsq__uniform-w2__s0.json"
    assert [p.name for p in rows.glob("*.json")] == [done.name]
    first = json.loads(done.read_text())
    assert len(first["seconds_per_epoch"]) == 2 and not list(partial.glob("lsq__uniform-w2*"))
    before = done.stat().st_mtime_ns
    # the rest: the finished row is skipped, the second runs
    assert mpq_paper.main(common) == 0
    assert done.stat().st_mtime_ns == before
    second = json.loads((rows / "lsq__mpq-switching-25__s0.json").read_text())
    assert second["criterion"] == "switching" and second["budget_percent"] == 25
    assert second["test_images"] == 50 and second["train_images"] == 64 and second["qat_epochs"] == 2
    assert 0 <= second["integer_accuracy"] <= 1 and second["compression_vs_uniform_w4"] > 1
    # the same network with batch norm re-estimated, exported beside it and scored too
    assert 0 <= second["integer_accuracy_bn_reestimated"] <= 1 and second["bn_reestimate_images"] == 5120
    assert os.path.isfile(second["bn_reestimated_model_file"])
    assert second["bn_reestimated_model_file"] != second["model_file"]
    # Priced as it finishes: the same network in uniform 4-bit storage costs more.
    assert second["energy"]["on_chip"]["bitfusion_over_mpq"] > 1
    assert second["energy"]["sized_for_w4"]["energy_uj"] > 0
    capsys.readouterr()
    assert mpq_paper.main(common + ["--plan"]) == 0
    assert "2 of 2 rows done" in capsys.readouterr().out
    # the tracking overhead: per step without assignments, and the assignments timed apart
    assert mpq_paper.main(common + ["--overhead", "--overhead-steps", "1", "--overhead-repeats", "1"]) == 0
    overhead = json.loads((state / "digits-cnn_w1" / "overhead.json").read_text())
    assert overhead["assignment_seconds"] > 0 and overhead["assignments_per_row"] == 2
    assert set(overhead["overhead_percent"]) == {"switching", "fisher", "switching+lr_rule"}
    assert all(overhead["overhead_percent"][k] > v for k, v in overhead["per_step_percent"].items())
    # other settings in the same state folder are refused
    assert mpq_paper.main(common[:-3] + ["--qat-epochs", "3", "--only", "lsq/uniform-w3/s0"]) == 2
    assert "qat_epochs" in capsys.readouterr().err


def test_a_lock_left_by_a_dead_runner_is_taken_over_even_where_its_pid_lives_again(tmp_path):
    import socket
    state = mpq_paper.State(str(tmp_path), "vgg9_w0.25")
    row = mpq_paper.Row("vgg9_w0.25", "lsq", "uniform-w2", 0)
    assert state.lock(row) and state.holder(row)["pid"] == os.getpid()
    assert not state.lock(row)                      # held by a live runner: this one
    info = json.loads(open(state.lock_file(row)).read())
    if info["process"] is None:
        pytest.skip("no /proc: the lock keeps the pid only")
    # A fresh machine of the same name gives a new process the pid of a
    # runner from an earlier session: the start time tells them apart.
    stale = dict(info, process=info["process"] + "0")
    open(state.lock_file(row), "w").write(json.dumps(stale))
    assert state.holder(row) is None and not os.path.exists(state.lock_file(row))
    # a runner on another host is never judged from here
    open(state.lock_file(row), "w").write(json.dumps(dict(stale, host=socket.gethostname() + "-other")))
    assert state.holder(row) is not None and not state.lock(row)
    state.unlock(row)
    assert state.lock(row)


def test_a_row_file_that_is_not_json_is_named_and_nothing_is_written(tmp_path, capsys):
    rows = tmp_path / "vgg9_w0.25" / "rows"
    rows.mkdir(parents=True)
    (rows / "lsq__uniform-w2__s0.json").write_text("{edited by hand")
    out = tmp_path / "report"
    assert mpq_paper.main(["--report", "--state", str(tmp_path), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "lsq__uniform-w2__s0.json: not a readable JSON file" in error and "Traceback" not in error
    assert not list(tmp_path.glob("report*"))


def _row(variant, seed, accuracy, bits, quantizer="lsq"):
    criterion = None if variant.startswith("uniform") else variant.split("-")[1]
    return {"id": f"vgg9_w0.25/{quantizer}/{variant}/s{seed}", "model": "vgg9", "width": 0.25,
            "quantizer": quantizer, "variant": variant, "seed": seed, "criterion": criterion,
            "granularity": None if criterion is None else "hardware",
            "budget_percent": None if criterion is None else int(variant.partition("+")[0].rsplit("-", 1)[1]),
            "train_images": 50000, "test_images": 10000, "qat_epochs": 10, "float_epochs": 30,
            "float_accuracy": 0.85, "integer_accuracy": accuracy, "hardware_bits_per_weight": bits,
            "average_weight_bits": bits - 0.3, "compression_vs_uniform_w4": 4.3 / bits,
            "per_layer": [{"name": "conv", "weights": 10, "hardware_mean_bits": bits, "mean_bits": bits}],
            "upgraded_weights": 0, "middle_weights": 100,
            "oscillating_weights": None if criterion is None else 3,
            "assignments": [] if criterion is None else [{"units": 10, "scored_units": 4}],
            "seconds_per_epoch": [100.0], "eval_seconds": 10.0, "command": "python bench/mpq_paper.py",
            "revision": "abc"}


def test_the_report_aggregates_rows_over_seeds_against_the_uniform_line(tmp_path):
    rows = [_row("uniform-w2", s, a, 2.3) for s, a in ((0, 0.70), (1, 0.72))]
    rows += [_row("uniform-w3", s, a, 3.3) for s, a in ((0, 0.80), (1, 0.80))]
    rows += [_row("uniform-w4", s, a, 4.3) for s, a in ((0, 0.82), (1, 0.84))]
    rows += [_row("mpq-switching-25", s, a, 2.8) for s, a in ((0, 0.79), (1, 0.80))]
    rows += [_row("mpq-random-25", s, a, 2.8) for s, a in ((0, 0.74), (1, 0.75))]
    rows[-1]["integer_accuracy_bn_reestimated"] = 0.76      # one seed of two has the second score
    rows[0]["integer_accuracy_bn_reestimated"] = 0.71
    rows[1]["integer_accuracy_bn_reestimated"] = 0.75
    for row, ratio in zip(rows[-2:], (1.2, 1.4)):
        row["energy"] = {scenario: {"bitfusion_over_mpq": ratio, "energy_uj": 1.0}
                         for scenario in ("on_chip", "sized_for_w4")}
    # the chunk unit's criterion against its own control
    rows += [_row("chunkwise-switching-10", 0, 0.76, 2.5)]
    rows += [_row("chunkwise-random-10", s, a, 2.5) for s, a in ((0, 0.77), (1, 0.78))]
    # an ablation, judged against the variant it changes
    rows += [_row("mpq-switching-25+early", s, a, 2.8) for s, a in ((0, 0.81), (1, 0.82))]
    # the paper-era quantizer's row, against LSQ's of the same variant (item 4)
    rows += [_row("uniform-w2", s, a, 2.3, quantizer="stats") for s, a in ((0, 0.66), (1, 0.67))]
    stem = str(tmp_path / "report")
    mpq_report.write_report(rows, {}, {"vgg9_w0.25": {"overhead_percent": {"switching": 1.0, "fisher": 2.0}}},
                           stem)
    report = json.loads((tmp_path / "report.json").read_text())
    assert {"command", "revision", "machine"} <= set(report)
    entries = {s["variant"]: s for s in report["summary"] if s["quantizer"] == "lsq"}
    for entry in entries.values():
        assert {"model", "width", "variant", "seeds", "train_images", "qat_epochs", "float_epochs",
                "integer_accuracy_mean", "integer_accuracy_spread", "hardware_bits_per_weight",
                "compression_vs_uniform_w4", "vs_uniform_line", "per_layer"} <= set(entry)
    switching = entries["mpq-switching-25"]
    assert switching["seeds"] == [0, 1] and switching["integer_accuracy_mean"] == pytest.approx(0.795)
    assert switching["integer_accuracy_spread"] == pytest.approx(0.01)
    assert switching["uniform_line_at_same_bits"] == pytest.approx(0.755)    # halfway from W2 (0.71) to W3
    assert switching["vs_uniform_line"] == pytest.approx(0.04) and switching["beyond_spread"]
    assert switching["upgraded_units_that_oscillated"] == pytest.approx(0.4)
    assert entries["uniform-w3"]["vs_uniform_line"] == pytest.approx(0)
    text = (tmp_path / "report.md").read_text()
    assert "mpq-switching against mpq-random at 25%: +5.00 points" in text and "**switching better**" in text
    assert "headroom, uniform W4 over W2: +12.00 points (spreads 2.00 and 2.00; seeds 2 and 2): **beyond" in text
    assert "| mpq-switching-25 | 2 | 79.50 | 1.00 | 2.800 |" in text
    assert "| uniform-w2 | 2 | 71.00 | 2.00 | 2.300 | 1.870x | +0.00 | 73.00 |" in text
    assert "| 76.00 (1 of 2 seeds) |" in text
    assert ("batch-norm re-estimation after retraining (item 5), accuracy change over 3 row(s): mean +1.67 "
            "points, +1.00 to +3.00") in text
    assert ("chunkwise-switching against chunkwise-random at 10%: -1.50 points (spreads 0.00 and 1.00; seeds 1 "
            "and 2): **undecided: fewer than 2 seeds**") in text
    assert ("ablation mpq-switching-25+early against mpq-switching-25: +2.00 points (spreads 1.00 and 1.00; "
            "seeds 2 and 2): **the ablation better**") in text
    assert entries["mpq-switching-25+early"]["method"] == "mpq-switching+early"
    assert ("vgg9 width 0.25: uniform-w2, paper-era quantizer (stats) against LSQ: -4.50 points (spreads 1.00 "
            "and 2.00; seeds 2 and 2): **LSQ better**") in text
    assert switching["bitfusion_over_mpq"] is None       # these rows have no model files to price
    assert entries["mpq-random-25"]["bitfusion_over_mpq"]["on_chip"] == pytest.approx(1.3)
    assert "| 1.300x, 1.300x |" in text
    assert (tmp_path / "report_pareto.png").stat().st_size > 0 and (tmp_path / "report_layers.png").is_file()


def test_restore_continues_the_protocol_from_a_committed_report(tmp_path, capsys):
    rows = [_row("uniform-w2", 0, 0.70, 2.3), _row("mpq-switching-25", 0, 0.79, 2.8)]
    stem = str(tmp_path / "report")
    mpq_report.write_report(rows, {"vgg9_w0.25": {"qat_epochs": 10}}, {}, stem)
    state = tmp_path / "state"
    kept = state / "vgg9_w0.25" / "rows" / "lsq__uniform-w2__s0.json"
    kept.parent.mkdir(parents=True)
    kept.write_text('{"mine": 1}')
    assert mpq_paper.main(["--restore", stem + ".json", "--state", str(state)]) == 0
    assert json.loads(kept.read_text()) == {"mine": 1}                # never overwritten
    restored = json.loads((kept.parent / "lsq__mpq-switching-25__s0.json").read_text())
    assert restored["integer_accuracy"] == 0.79
    assert json.loads((state / "vgg9_w0.25" / "protocol.json").read_text()) == {"qat_epochs": 10}
    args = mpq_paper.parse_args(["--state", str(state)])
    done = mpq_paper.State(str(state), "vgg9_w0.25")
    assert [row.name for row in mpq_paper.build_plan("vgg9_w0.25", args) if done.done(row)] == [
        "lsq/uniform-w2/s0", "lsq/mpq-switching-25/s0"]
    for bad in ("[]", '{"protocols": {}, "rows": [{"id": "vgg9_w0.25/lsq/uniform-w4/s0"}, {"id": "x"}]}'):
        (tmp_path / "bad.json").write_text(bad)
        assert mpq_paper.main(["--restore", str(tmp_path / "bad.json"), "--state", str(tmp_path / "new")]) == 2
        assert "not a report" in capsys.readouterr().err
        assert not (tmp_path / "new").exists()                        # nothing half-written


def test_a_state_continues_where_the_float_checkpoint_lies_elsewhere(tmp_path):
    state = mpq_paper.State(str(tmp_path), "vgg9_w0.25")
    settings = {key: 1 for key in mpq_paper.IDENTITY}
    first = {**settings, "float_checkpoint": "/work/main/bench/checkpoints/f.pt", "float_checkpoint_sha256": "aa"}
    state.check_protocol(first)
    # another machine, the same file elsewhere: accepted, and loaded from there
    moved = {**first, "float_checkpoint": "/repo/bench/checkpoints/f.pt"}
    assert state.check_protocol(moved)["float_checkpoint"] == "/repo/bench/checkpoints/f.pt"
    with pytest.raises(mpq_paper.UserError, match="float_checkpoint"):
        state.check_protocol({**moved, "float_checkpoint_sha256": "bb"})    # other content
    with pytest.raises(mpq_paper.UserError, match="qat_epochs"):
        state.check_protocol({**moved, "qat_epochs": 2})
    assert mpq_paper.parse_args(["--full"]).width == 1.0
