"""Mixed-precision retraining (sw/quantize/mpq.py): tracker, extra bit,
threshold-aware learning rate, export and storage accounting."""

import pytest
import torch
import torch.nn.functional as F

from common.errors import UserError
from sw.quantize import groups, mpq
from sw.quantize.config import parse_precision
from sw.quantize.convert import calibrate, quantize_network
from sw.quantize.export import network_integers, write_model_file
from sw.quantize.quantizers import WeightQuantizer
from sw.quantize.reference import IntegerModel


def test_tracker_tells_oscillation_drift_and_still_weights():
    counter = mpq.SwitchCounter((3,), momentum=0.9)
    trajectory = [[0, 0, 5], [2, 2, 5], [0, 4, 5], [2, 6, 5], [0, 8, 5], [0, 6, 5]]
    for levels in trajectory:
        counter.observe(torch.tensor(levels))
    # weight 0: 0>2 (first switch: drift), then 2>0, 0>2, 2>0 back and forth: 3 oscillations
    # weight 1: 0>2>4>6>8 drift, then 8>6 is a reversal but 6 is where it came from: oscillation
    # weight 2: never moves
    assert counter.oscillations.tolist() == [3, 1, 0]
    assert counter.drifts.tolist() == [1, 4, 0]
    assert counter.frequency[0] > counter.frequency[1] > counter.frequency[2] == 0
    assert counter.steps == len(trajectory) - 1


def test_tracker_hook_reads_levels_from_the_training_forward(make_cnn, synthetic_dataset):
    network = quantize_network(make_cnn(), parse_precision("w2a4", group_size=1), synthetic_dataset.input_shape)
    calibrate(network, synthetic_dataset.train_x[:64])
    tracker = mpq.SwitchTracker(mpq.middle_layers(network))
    network.train()
    network(synthetic_dataset.train_x[:8].float())
    network.eval()
    layer = mpq.middle_layers(network)[0]
    expected, _ = layer.weight_quantizer(layer.op.weight)
    assert torch.equal(tracker.counters[0].level, expected.to(torch.int32))
    network(synthetic_dataset.train_x[:8].float())   # eval forwards are not training steps
    assert tracker.counters[0].steps == 0
    tracker.remove()


def _coarse_quantizer(weight, base=2, group_size=1):
    quantizer = WeightQuantizer(weight.shape, base + 1, group_size)
    quantizer.step.data.fill_(1.0)
    quantizer.group_bits.fill_(base)
    quantizer.group_shift.fill_(1)
    return quantizer


def test_extra_bit_puts_the_new_level_between_the_two_old_ones_and_keeps_the_range():
    # fine units: weights either side of the coarse threshold at -1 (levels -2 and 0)
    weight = torch.tensor([[-1.1, -0.9, -3.6, 0.2]])
    quantizer = _coarse_quantizer(weight)
    coarse, _ = quantizer(weight)
    assert coarse.tolist() == [[-2.0, 0.0, -4.0, 0.0]]
    low_coarse, high_coarse, unit = quantizer._ranges("cpu")
    coarse_range = ((low_coarse * unit).min(), (high_coarse * unit).max())
    mpq.upgrade(quantizer, torch.ones_like(quantizer.group_bits, dtype=torch.bool))
    assert quantizer.group_bits.unique().tolist() == [3] and quantizer.group_shift.unique().tolist() == [0]
    fine, _ = quantizer(weight)
    assert fine.tolist() == [[-1.0, -1.0, -4.0, 0.0]]        # -1 lies between -2 and 0
    low, high, unit = quantizer._ranges("cpu")
    assert (low * unit).min() == coarse_range[0]              # same lower end: -4
    assert 0 <= (high * unit).max() - coarse_range[1] <= 1    # upper end within one fine step
    q, bits, shift = quantizer.export(weight)
    assert torch.equal(q << groups.expand_to_weights(shift, weight.shape, 1), fine.long())


def test_lr_rule_scale_at_and_away_from_thresholds():
    u = torch.tensor([0.5, 1.0, 0.45, 1.3, 2.6, -2.6])
    distance = mpq.threshold_distance(u, torch.tensor(-2.0), torch.tensor(1.0))
    assert torch.allclose(distance, torch.tensor([0.0, 0.5, 0.05, 0.2, 1.1, 0.1]))
    scale = mpq.lr_scale(distance, "linear", 0.2, 0.2)
    assert torch.allclose(scale, torch.tensor([0.2, 1.0, 0.4, 1.0, 1.0, 0.6]))
    gauss = mpq.lr_scale(torch.tensor([0.0, 1.0]), "gauss", 0.1, 0.1)
    assert gauss[0] == pytest.approx(0.1) and gauss[1] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lr_rule_scales_each_update_with_sgd_and_adam(make_cnn, synthetic_dataset, optimizer):
    def one_step(rule):
        torch.manual_seed(0)
        network = quantize_network(make_cnn(), parse_precision("w2a4"), synthetic_dataset.input_shape)
        calibrate(network, synthetic_dataset.train_x[:64])
        layers = mpq.middle_layers(network)
        opt = (torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9) if optimizer == "sgd"
               else torch.optim.Adam(network.parameters(), lr=0.01))
        network.train()
        loss = F.cross_entropy(network(synthetic_dataset.train_x[:32].float()), synthetic_dataset.train_y[:32])
        loss.backward()
        before = [layer.op.weight.detach().clone() for layer in layers]
        scales = rule.__class__(layers, "linear", 0.2, 0.2).scales() if rule else None
        if rule:
            rule.layers = layers
            rule.before_step()
        opt.step()
        if rule:
            rule.after_step()
        return [layer.op.weight.detach() - b for layer, b in zip(layers, before)], scales

    plain, _ = one_step(None)
    damped, scales = one_step(mpq.ThresholdLR([], "linear", 0.2, 0.2))
    for p, d, s in zip(plain, damped, scales):
        assert torch.allclose(d, p * s, atol=1e-7)
        assert s.min() < 0.5 and s.max() == 1.0


def test_per_group_upgrade_makes_every_member_fine_grid():
    weight = torch.randn(4, 40, 3, 3)
    quantizer = _coarse_quantizer(weight, base=2, group_size=16)
    counter = mpq.SwitchCounter(weight.shape)
    counter.frequency[1, 17, 2, 0] = 0.5            # one oscillating weight in group (1, 2, 0, 1)
    layer = type("Layer", (), {"weight_quantizer": quantizer})()
    config = mpq.MPQConfig(granularity="group", fraction=0.1)
    upgraded = mpq.assign_extra_bit([layer], [counter], config)
    bits = groups.expand_to_weights(quantizer.group_bits, weight.shape, 16)
    shift = groups.expand_to_weights(quantizer.group_shift, weight.shape, 16)
    fine = (bits == 3) & (shift == 0)
    assert upgraded == 16 and int(fine.sum()) == 16
    assert fine[1, 16:32, 2, 0].all()
    assert ((bits == 2) & (shift == 1) | fine).all()


def test_mpq_export_and_integer_reference_agree_with_fake_quant(make_cnn, synthetic_dataset, tmp_path):
    torch.manual_seed(0)
    config = mpq.MPQConfig(granularity="weight", fraction=0.2, assign_at=(0.3, 0.6), lr_rule="linear",
                           lr_start=0.6, momentum=0.9)
    network = quantize_network(make_cnn(), parse_precision(config.precision(), group_size=1),
                               synthetic_dataset.input_shape)
    calibrate(network, synthetic_dataset.train_x[:128])
    mpq.prepare(network, config)
    mpq.retrain(network, synthetic_dataset, config, epochs=3, lr=0.05, batch_size=32)
    bits = torch.cat([layer.weight_quantizer.group_bits.flatten() for layer in mpq.middle_layers(network)])
    assert set(bits.unique().tolist()) == {2, 3}, "the run must leave mixed precision to test"
    images = synthetic_dataset.test_x
    with torch.no_grad():
        logits, codes, logits_int = network(images.float(), return_codes=True)
    path = tmp_path / "mpq.mpq"
    write_model_file(network, str(path))
    reference = IntegerModel.load(str(path))
    ref_logits, ref_codes = reference(images, return_codes=True)
    for fake, exact in zip(codes, ref_codes):
        assert torch.equal(fake, exact)
    assert torch.equal(logits_int, ref_logits)


def test_storage_accounting_on_a_hand_computed_example(make_cnn, synthetic_dataset):
    network = quantize_network(make_cnn(), parse_precision("w3a4,first=w8,last=w8", group_size=16),
                               synthetic_dataset.input_shape)
    calibrate(network, synthetic_dataset.train_x[:64])
    mpq.prepare(network, mpq.MPQConfig(base_bits=2))
    header, arrays = network_integers(network)
    storage = mpq.weight_storage_bits(header, arrays)
    tag, scales = mpq.TAG_BITS, lambda channels: 16 * channels + 6
    # conv 3>8 3x3, 8-bit: 8*9 groups (3 channels padded to 16 lanes)
    first = 72 * (16 * 8 + tag) + scales(8)
    # conv 8>16 3x3 on the coarse grid: 2-bit groups, 16*9 of them
    conv = 144 * (16 * 2 + tag) + scales(16)
    # linear (16,4,4)>32: the compiler's groups, 16 channels at one of 4*4 positions
    linear = 32 * 16 * (16 * 2 + tag) + scales(32)
    last = 4 * 2 * (16 * 8 + tag)                   # 32>4, no requantization
    assert storage["hardware"] == first + conv + linear + last
    weights = 8 * 3 * 9 + 16 * 8 * 9 + 32 * 256 + 4 * 32
    assert storage["weights"] == weights
    assert storage["ideal"] == (8 * 216 + scales(8) + 2 * 1152 + scales(16) + 2 * 8192 + scales(32)
                                + 8 * 128)
    # one group of the conv layer to the fine grid: 16 more weight bits, and the
    # ideal storage gains the bit plus a grid flag per model group in that layer
    quantizer = network.layers[1].weight_quantizer
    chosen = torch.zeros_like(quantizer.group_bits, dtype=torch.bool)
    chosen[0, 0, 0, 0] = True
    mpq.upgrade(quantizer, chosen)
    header, arrays = network_integers(network)
    upgraded = mpq.weight_storage_bits(header, arrays)
    assert upgraded["hardware"] == storage["hardware"] + 16
    assert upgraded["ideal"] == storage["ideal"] + 8 + 144
    # uniform W4 under the same rules: 4-bit middle layers, same first and last
    ratio, _, uniform = mpq.compression_vs_uniform_w4(header, arrays)
    assert uniform["hardware"] == first + 144 * (64 + tag) + scales(16) + 512 * (64 + tag) + scales(32) + last
    assert ratio == pytest.approx(uniform["hardware"] / upgraded["hardware"])


def test_hardware_granularity_upgrades_the_compilers_groups_of_a_flattening_layer(make_cnn, synthetic_dataset):
    config = mpq.MPQConfig(granularity="hardware", fraction=0.1)
    network = quantize_network(make_cnn(), parse_precision(config.precision(), group_size=1),
                               synthetic_dataset.input_shape)
    mpq.prepare(network, config)
    layers = mpq.middle_layers(network)          # conv 8>16, then linear over a (16, 4, 4) map
    counters = [mpq.SwitchCounter(tuple(layer.op.weight.shape)) for layer in layers]
    counters[1].frequency[3, 5 * 16 + 7] = 0.5   # output 3, channel 5, position 7
    upgraded = mpq.assign_extra_bit(layers, counters, config)
    fine = layers[1].weight_quantizer.group_shift == 0          # (32, 256), per weight
    expected = torch.zeros_like(fine)
    expected[3, torch.arange(16) * 16 + 7] = True               # all 16 channels at position 7
    assert upgraded == 16 and torch.equal(fine, expected)
    assert (layers[0].weight_quantizer.group_shift == 1).all()


def test_chunk_granularity_upgrades_a_whole_channel_tile(make_cnn, synthetic_dataset):
    """One oscillating weight upgrades its compiler group in every output
    channel of its tile of `chunk_rows` (the unit that runs in one PE mode)."""
    config = mpq.MPQConfig(granularity="chunk", chunk_rows=4, fraction=0.1)
    network = quantize_network(make_cnn(), parse_precision(config.precision(), group_size=1),
                               synthetic_dataset.input_shape)
    mpq.prepare(network, config)
    layers = mpq.middle_layers(network)          # conv 8>16, then linear over a (16, 4, 4) map
    counters = [mpq.SwitchCounter(tuple(layer.op.weight.shape)) for layer in layers]
    counters[1].frequency[6, 5 * 16 + 7] = 0.5   # output 6 (tile 4..7), channel 5, position 7
    upgraded = mpq.assign_extra_bit(layers, counters, config)
    fine = layers[1].weight_quantizer.group_shift == 0          # (32, 256), per weight
    expected = torch.zeros_like(fine)
    for output in range(4, 8):
        expected[output, torch.arange(16) * 16 + 7] = True
    assert upgraded == 4 * 16 and torch.equal(fine, expected)
    assert (layers[0].weight_quantizer.group_shift == 1).all()
    with pytest.raises(UserError, match="granularity"):
        mpq.MPQConfig(granularity="rows")


def test_a_per_layer_budget_upgrades_the_same_share_of_every_layer(make_cnn, synthetic_dataset):
    config = mpq.MPQConfig(granularity="weight", budget="per_layer", fraction=0.1)
    network = quantize_network(make_cnn(), parse_precision(config.precision(), group_size=1),
                               synthetic_dataset.input_shape)
    mpq.prepare(network, config)
    layers = mpq.middle_layers(network)
    counters = [mpq.SwitchCounter(tuple(layer.op.weight.shape)) for layer in layers]
    for counter in counters:                     # every weight oscillates, the first layer most
        counter.frequency.fill_(0.1)
    counters[0].frequency.fill_(0.9)
    mpq.assign_extra_bit(layers, counters, config)
    for layer in layers:
        fine = (layer.weight_quantizer.group_shift == 0).float().mean().item()
        assert 0.09 <= fine <= 0.1
    with pytest.raises(UserError, match="budget"):
        mpq.MPQConfig(budget="everything")
