"""MPQ's selection criteria at equal budget (switching, fisher, random; per
compiler group, chunk or layer), the paper-era statistics step, and
retraining that resumes from its state."""

import math

import pytest
import torch
import torch.nn.functional as F

from sw.quantize import mpq
from sw.quantize.config import parse_precision
from sw.quantize.convert import calibrate, quantize_network
from sw.quantize.export import write_model_file
from sw.quantize.quantizers import WeightQuantizer, signed_range
from sw.quantize.reference import IntegerModel


def _network(make_cnn, dataset, config, seed=0):
    torch.manual_seed(seed)
    network = quantize_network(make_cnn(), parse_precision(config.precision(), group_size=config.quantizer_group_size),
                               dataset.input_shape)
    mpq.use_weight_step(network, config.weight_step)
    calibrate(network, dataset.train_x[:64])
    mpq.prepare(network, config)
    return network


def _scores(layers, oscillating=()):
    """Switch counters (a few oscillating weights, every weight some drift)
    and a Fisher tracker with random squared gradients."""
    generator = torch.Generator().manual_seed(7)
    counters = [mpq.SwitchCounter(tuple(layer.op.weight.shape)) for layer in layers]
    for counter in counters:
        counter.drifts += torch.randint(0, 3, counter.drifts.shape, generator=generator, dtype=torch.int32)
    for layer_index, weight_index in oscillating:
        counters[layer_index].frequency[weight_index] = 0.5
        counters[layer_index].oscillations[weight_index] = 3
    fisher = mpq.FisherTracker(layers)
    fisher.fisher = [torch.rand(f.shape, generator=generator) for f in fisher.fisher]
    return counters, fisher


def _fine(layers):
    return sum(mpq.fine_weights(layer) for layer in layers)


@pytest.mark.parametrize("criterion", ["switching", "fisher", "random"])
@pytest.mark.parametrize("granularity,unit", [("hardware", 16), ("chunk", 8 * 16)])
def test_each_criterion_upgrades_the_budgeted_share_of_units(make_cnn, synthetic_dataset, criterion,
                                                             granularity, unit):
    config = mpq.MPQConfig(granularity=granularity, criterion=criterion, fill=True, fraction=0.25)
    network = _network(make_cnn, synthetic_dataset, config)
    layers = mpq.middle_layers(network)       # conv 8>16 3x3 (1152 weights), linear 256>32 (8192)
    counters, fisher = _scores(layers, oscillating=[(1, (3, 5 * 16 + 7)), (0, (2, 1, 0, 0))])
    total = sum(layer.op.weight.numel() for layer in layers)
    # two assignments of one budget (as retrain makes them): the second tops up to 25%, no more
    stats = {}
    mpq.assign_extra_bit(layers, counters, config, 0.125, fisher=fisher)
    assert 0.125 * total - unit < _fine(layers) <= 0.125 * total
    mpq.assign_extra_bit(layers, counters, config, 0.25, fisher=fisher, stats=stats)
    assert 0.25 * total - unit < _fine(layers) <= 0.25 * total
    assert stats["units"] > 0
    if criterion == "switching":   # the oscillating units go first, then the budget is filled
        assert layers[1].weight_quantizer.group_shift[3, 5 * 16 + 7] == 0
        assert layers[0].weight_quantizer.group_shift[2, 0, 0, 1] == 0


def test_random_is_reproducible_by_seed_and_differs_from_switching(make_cnn, synthetic_dataset):
    def chosen(**options):
        config = mpq.MPQConfig(granularity="hardware", fill=True, fraction=0.25, **options)
        network = _network(make_cnn, synthetic_dataset, config)
        layers = mpq.middle_layers(network)
        counters, fisher = _scores(layers, oscillating=[(1, (3, 5 * 16 + 7))])
        mpq.assign_extra_bit(layers, counters, config, fisher=fisher)
        return torch.cat([(layer.weight_quantizer.group_shift == 0).flatten() for layer in layers])

    first = chosen(criterion="random", seed=1)
    assert torch.equal(first, chosen(criterion="random", seed=1))
    assert not torch.equal(first, chosen(criterion="random", seed=2))
    assert int(first.sum()) == int(chosen(criterion="switching").sum())   # the same budget,
    assert not torch.equal(first, chosen(criterion="switching"))          # other groups
    assert not torch.equal(first, chosen(criterion="fisher"))


def test_layerwise_upgrades_whole_layers_by_sensitivity_per_weight(make_cnn, synthetic_dataset, tmp_path):
    config = mpq.MPQConfig(granularity="layer", criterion="fisher", fraction=0.25)
    network = _network(make_cnn, synthetic_dataset, config)
    layers = mpq.middle_layers(network)
    counters, fisher = _scores(layers)
    fisher.fisher[1].mul_(1e6)     # the linear layer is the most sensitive, but 8192 > 25% of 9344
    upgraded = mpq.assign_extra_bit(layers, counters, config, fisher=fisher)
    assert upgraded == 1152
    assert (layers[0].weight_quantizer.group_shift == 0).all()          # skipped to the next that fits
    assert (layers[1].weight_quantizer.group_shift == 1).all()
    assert mpq.assign_extra_bit(layers, counters, config, 1.0, fisher=fisher) == 8192
    header = write_model_file(network, str(tmp_path / "layerwise.mpq"))
    assert header["group_size"] == 16
    for layer in layers:
        assert layer.weight_quantizer.group_bits.unique().tolist() == [3]


def test_error_reduction_of_the_extra_bit():
    weight = torch.tensor([[1.0, 2.0, 3.4, -4.6]])
    layer = type("Layer", (), {})()
    layer.folded_weight_bias = lambda: (weight, None)
    layer.weight_quantizer = type("Quantizer", (), {"step": torch.tensor(1.0), "step_unit": torch.tensor(1.0)})()
    # coarse levels -4 -2 0 2; fine levels -4..3
    expected = torch.tensor([[1.0, 0.0, 1.4 ** 2 - 0.4 ** 2, 0.0]])
    assert torch.allclose(mpq.error_reduction(layer, 2), expected)


def test_statistics_step_is_not_learned_and_exports_bit_exactly(make_cnn, synthetic_dataset, tmp_path):
    config = mpq.MPQConfig(granularity="hardware", criterion="fisher", fraction=0.3, weight_step="statistics",
                           lr_rule="linear", lr_start=0.6)
    network = _network(make_cnn, synthetic_dataset, config)
    steps_before = [float(layer.weight_quantizer.step.detach()) for layer in network.layers]
    result = mpq.retrain(network, synthetic_dataset, config, epochs=1, lr=0.05, batch_size=32)
    assert result["upgraded_weights"] > 0 and result["fisher"].steps == 8
    for layer, before in zip(network.layers, steps_before):
        quantizer = layer.weight_quantizer
        weight, _ = layer.folded_weight_bias()
        qmax = signed_range(quantizer.step_bits)[1]
        rule = 2 * weight.detach().abs().mean() / math.sqrt(qmax)
        assert quantizer.step.grad is None                      # no gradient reaches the step
        assert float(quantizer.step.detach() * quantizer.step_unit) == pytest.approx(float(rule), rel=1e-6)
        assert float(quantizer.step.detach()) != before         # it follows the weights
    images = synthetic_dataset.test_x
    with torch.no_grad():
        _, codes, logits_int = network(images.float(), return_codes=True)
    path = tmp_path / "stats.mpq"
    header = write_model_file(network, str(path))
    reference = IntegerModel.load(str(path))
    ref_logits, ref_codes = reference(images, return_codes=True)
    for fake, exact in zip(codes, ref_codes):
        assert torch.equal(fake, exact) and exact.max() > 0
    assert torch.equal(logits_int, ref_logits)
    for fields, layer in zip(header["layers"], network.layers):
        _, step = layer.weight_quantizer(layer.folded_weight_bias()[0])
        assert fields["weight_step"] == float(step)


def test_fisher_tracker_sums_squared_gradients(make_cnn, synthetic_dataset):
    config = mpq.MPQConfig(granularity="hardware")
    network = _network(make_cnn, synthetic_dataset, config)
    layers = mpq.middle_layers(network)
    fisher = mpq.FisherTracker(layers)
    network.train()
    expected = [torch.zeros_like(layer.op.weight) for layer in layers]
    for start in (0, 32):
        network.zero_grad()
        images = synthetic_dataset.train_x[start:start + 32].float()
        F.cross_entropy(network(images), synthetic_dataset.train_y[start:start + 32]).backward()
        fisher.observe()
        for total, layer in zip(expected, layers):
            total += layer.op.weight.grad ** 2
    assert fisher.steps == 2
    for total, observed in zip(expected, fisher.fisher):
        assert torch.allclose(total, observed) and observed.sum() > 0


@pytest.mark.parametrize("options", [
    dict(criterion="fisher", lr_rule="linear", lr_start=0.6),
    # switching, dampening and freezing from 30% of the steps: both before and after the stop
    dict(criterion="switching", fill=True, dampen=1.0, dampen_start=0.3, freeze_threshold=0.02,
         freeze_start=0.3, momentum=0.5),
], ids=["fisher-lr-rule", "switching-damp-freeze"])
def test_retraining_resumes_from_its_state_with_the_same_result(make_cnn, synthetic_dataset, tmp_path,
                                                                options):
    dataset = synthetic_dataset
    dataset.train_x, dataset.train_y = dataset.train_x[:128], dataset.train_y[:128]     # 4 steps an epoch
    config = mpq.MPQConfig(granularity="hardware", fraction=0.3, **options)
    whole = _network(make_cnn, synthetic_dataset, config)
    expected = mpq.retrain(whole, synthetic_dataset, config, epochs=2, lr=0.05, batch_size=32)
    state = tmp_path / "state.pt"
    first = _network(make_cnn, synthetic_dataset, config)
    stopped = mpq.retrain(first, synthetic_dataset, config, epochs=2, lr=0.05, batch_size=32,
                          state_path=str(state), stop=lambda: True)
    assert stopped["stopped"] and len(stopped["history"]) == 1 and state.is_file()
    resumed = _network(make_cnn, synthetic_dataset, config)      # a new process would rebuild it
    result = mpq.retrain(resumed, synthetic_dataset, config, epochs=2, lr=0.05, batch_size=32,
                         state_path=str(state))
    assert not result["stopped"] and len(result["history"]) == 2
    assert result["upgraded_weights"] == expected["upgraded_weights"] > 0
    assert result["frozen_weights"] == expected["frozen_weights"] >= (0 if config.freeze_threshold is None else 1)
    assert result["assignments"] == expected["assignments"]
    for (name, value), (_, other) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(value, other), name
    # The state of a finished retraining: resuming trains nothing and ends the same.
    steps = []
    again = _network(make_cnn, synthetic_dataset, config)
    finished = mpq.retrain(again, synthetic_dataset, config, epochs=2, lr=0.05, batch_size=32,
                           state_path=str(state), on_step=lambda: steps.append(1))
    assert steps == [] and finished["history"] == result["history"]
    assert finished["upgraded_weights"] == expected["upgraded_weights"]
    for (name, value), (_, other) in zip(whole.state_dict().items(), again.state_dict().items()):
        assert torch.equal(value, other), name


def test_dampening_pulls_each_weight_towards_its_level_and_only_from_its_start():
    weight = torch.tensor([[0.9, 2.2, 5.0, -3.4]], requires_grad=True)
    layer = type("Layer", (), {})()
    layer.folded_weight_bias = lambda: (weight, None)
    layer.weight_quantizer = WeightQuantizer((1, 4), bits=3, group_size=4)
    layer.weight_quantizer.step.data.fill_(1.0)
    # 3-bit levels -4..3: the targets 1, 2, 3 and -3; 5.0 is clipped to 3 first
    loss = mpq.dampening_loss([layer])
    assert float(loss.detach()) == pytest.approx(0.1 ** 2 + 0.2 ** 2 + 0 + 0.4 ** 2)
    loss.backward()
    # 2 (w - level) inside the grid's range, nothing outside it
    assert torch.allclose(weight.grad, torch.tensor([[-0.2, 0.4, 0.0, -0.8]]))
    # the schedule: nothing before the start, the full weight at the last step
    run = mpq._Retraining.__new__(mpq._Retraining)
    run.config, run.total_steps = mpq.MPQConfig(dampen=0.1, dampen_start=0.6), 100
    weights = {}
    for run.step in (0, 59, 60, 80, 100):
        weights[run.step] = run.dampening_weight()
    assert weights[0] == weights[59] == weights[60] == 0
    assert weights[80] == pytest.approx(0.05) and weights[100] == pytest.approx(0.1)


def test_dampened_retraining_leaves_weights_nearer_their_levels(make_cnn, synthetic_dataset):
    def distance(network):
        with torch.no_grad():
            return float(mpq.dampening_loss(mpq.middle_layers(network)))

    distances = {}
    for dampen in (0.0, 50.0):
        config = mpq.MPQConfig(granularity="hardware", extra_bit=False, track=False, dampen=dampen)
        network = _network(make_cnn, synthetic_dataset, config)
        mpq.retrain(network, synthetic_dataset, config, epochs=2, lr=0.05, batch_size=32)
        distances[dampen] = distance(network)
    assert distances[50.0] < 0.5 * distances[0.0]


def test_freezing_waits_for_its_start(make_cnn, synthetic_dataset):
    frozen = {}
    for start in (0.0, 0.9):
        # momentum 0.5: a weight's frequency passes 0.3 only in the step it
        # oscillates (and the next, if it does again)
        config = mpq.MPQConfig(granularity="hardware", extra_bit=False, freeze_threshold=0.3,
                               freeze_start=start, momentum=0.5)
        network = _network(make_cnn, synthetic_dataset, config)
        frozen[start] = mpq.retrain(network, synthetic_dataset, config, epochs=2, lr=0.05,
                                    batch_size=32)["frozen_weights"]
    assert frozen[0.0] > frozen[0.9] >= 0 and frozen[0.0] > 0


def test_fields_added_later_at_their_defaults_keep_a_states_settings():
    """A retraining state saved before `freeze_start`, `dampen` and
    `dampen_start` existed continues: at their defaults they are not in the
    settings it is matched by; set, they are."""
    import dataclasses

    plain = mpq._settings_config(mpq.MPQConfig())
    assert not set(mpq.LATER_FIELDS) & set(plain)
    assert plain == {name: value for name, value in dataclasses.asdict(mpq.MPQConfig()).items()
                     if name not in mpq.LATER_FIELDS}
    assert mpq._settings_config(mpq.MPQConfig(dampen=0.1))["dampen"] == 0.1
    with pytest.raises(mpq.UserError, match="dampen_start"):
        mpq.MPQConfig(dampen_start=1.0)
