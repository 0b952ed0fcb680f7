"""The activation-memory allocator (sw/compile/act_alloc.py) on random
graphs: chains of layers with residual shortcuts that live across 2 or 3
layers, as ResNets have."""

import random

import pytest

from common.errors import UserError
from sw.compile.act_alloc import ActMap, allocate, live_at, peak


def random_graph(rng):
    """ActMaps of an input image and a chain of layers, some of which add a
    shortcut from the map 2 or 3 steps back (so that map lives longer)."""
    layers = rng.randint(1, 14)
    last = {step: step + 1 for step in range(-1, layers - 1)}   # each map feeds the next layer
    last[layers - 1] = layers - 1                              # the last map feeds nobody
    for reader in range(1, layers):
        back = rng.choice((None, 2, 3))
        if back is not None and reader - back >= -1:
            last[reader - back] = max(last[reader - back], reader)
    return [ActMap("the input image" if step < 0 else f"layer{step}", rng.randint(1, 40), step,
                   last[step]) for step in range(-1, layers)]


def overlaps(a_base, a, b_base, b):
    return a_base < b_base + b.words and b_base < a_base + a.words


@pytest.mark.parametrize("seed", range(300))
def test_live_maps_never_overlap_and_fit(seed):
    rng = random.Random(seed)
    maps = random_graph(rng)
    words, _, _ = peak(maps)
    keep_all = sum(m.words for m in maps)
    depth = rng.randint(words, keep_all + 5)
    try:
        allocation = allocate(maps, depth)
    except UserError as error:
        # Placement may fragment; it must then say so, naming the limit.
        assert "act_depth" in str(error) and f"need {words} words per bank" in str(error)
        return
    assert allocation.keep_all_words == keep_all
    assert allocation.reused == (keep_all > depth)
    for i, (base, m) in enumerate(zip(allocation.bases, maps)):
        assert 0 <= base and base + m.words <= depth
        assert allocation.words >= base + m.words
        for j in range(i):
            # Live at once: j is read at or after the step i is written.
            if maps[j].last >= m.first:
                assert not overlaps(allocation.bases[j], maps[j], base, m), (maps[j], m)
    for i, m in enumerate(maps):
        overwritten = any(overlaps(allocation.bases[j], maps[j], allocation.bases[i], m)
                          for j in range(i + 1, len(maps)))
        assert allocation.survives[i] == (not overwritten)
    assert allocation.survives[-1]


@pytest.mark.parametrize("seed", range(50))
def test_every_map_keeps_its_own_region_when_all_fit(seed):
    maps = random_graph(random.Random(seed))
    keep_all = sum(m.words for m in maps)
    allocation = allocate(maps, keep_all)
    assert not allocation.reused and all(allocation.survives)
    assert allocation.bases == [sum(m.words for m in maps[:i]) for i in range(len(maps))]
    assert allocation.words == keep_all


def test_a_chain_alternates_between_two_regions():
    maps = [ActMap(f"layer{i}", 10, i, i + 1) for i in range(-1, 6)] + [ActMap("layer6", 10, 6, 6)]
    allocation = allocate(maps, 20)
    assert allocation.bases == [0, 10, 0, 10, 0, 10, 0, 10]
    assert allocation.survives == [False] * 6 + [True, True]


def test_a_shortcut_keeps_its_region_across_the_block():
    # layer0 -> layer1 -> layer2 (+ layer0) -> layer3
    maps = [ActMap("the input image", 8, -1, 0), ActMap("layer0", 8, 0, 2),
            ActMap("layer1", 8, 1, 2), ActMap("layer2", 8, 2, 3), ActMap("layer3", 8, 3, 3)]
    allocation = allocate(maps, 24)
    assert allocation.bases == [0, 8, 0, 16, 0]
    assert allocation.survives == [False, True, False, True, True]


def test_too_little_memory_names_the_peak_and_the_live_maps():
    maps = [ActMap("the input image", 8, -1, 0), ActMap("layer0", 8, 0, 2),
            ActMap("layer1", 8, 1, 2), ActMap("layer2", 8, 2, 3), ActMap("layer3", 8, 3, 3)]
    assert [m.name for m in live_at(maps, 2)] == ["layer0", "layer1", "layer2"]
    with pytest.raises(UserError, match=r"need 24 words per bank at their peak, while layer0, "
                                        r"layer1, layer2 are live.*holds 23 \(act_depth\).*more "
                                        r"activation memory"):
        allocate(maps, 23)


def test_where_first_fit_fragments_another_end_places_the_maps():
    # From either end, layer0 lands beside the image's 4 words and layer1 finds
    # no 6 free words in one piece; alternating ends puts layer0 at the other end.
    maps = [ActMap("the input image", 4, -1, 0), ActMap("layer0", 10, 0, 1),
            ActMap("layer1", 6, 1, 2), ActMap("layer2", 10, 2, 3), ActMap("layer3", 4, 3, 3)]
    allocation = allocate(maps, 16)
    assert allocation.bases == [0, 6, 0, 6, 0]
    for i, m in enumerate(maps):
        assert allocation.bases[i] + m.words <= 16
        for j in range(i):
            if maps[j].last >= m.first:
                assert not overlaps(allocation.bases[j], maps[j], allocation.bases[i], m)
