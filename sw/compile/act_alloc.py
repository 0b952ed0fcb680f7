"""Where each activation map lies in the activation memory.

The maps of a network (the input image and every non-raw layer's output;
a raw layer writes the result memory) each get a region of words per bank.
If every map fits side by side, every map keeps its own region, in layer
order: after a run every layer's output can be read back and compared with
the integer reference. Otherwise a map reuses the space of maps that no
later layer reads (liveness in layer order; first fit from address 0, or
from the top, or alternating ends when first fit fragments the memory).

Layer order is the core's order: a layer's `SET`s wait until the PPU of the
layer before has written its last tile (docs/isa.md, "Timing"), and every
read of a layer (its input and its shortcut) comes before its last tile
reaches the PPU, so a map whose last reader is layer `i` may be overwritten
from layer `i + 1` on. The phases of a multi-phase network change nothing:
the activation memory is carried from phase to phase as it is.
"""

import dataclasses

from common.errors import UserError


@dataclasses.dataclass(frozen=True)
class ActMap:
    """One map: `words` per bank, written at step `first` (its producer's
    layer index; -1 for the host's input image), read last at step `last`
    (`first` when nothing reads it)."""
    name: str
    words: int
    first: int
    last: int


@dataclasses.dataclass(frozen=True)
class Allocation:
    bases: list           # base address (words per bank) of each map
    survives: list        # per map: no later map overwrites any of its words
    words: int            # words per bank used (the highest base + words)
    keep_all_words: int   # words per bank every map's own region would need
    reused: bool          # False: every map has its own region


def live_at(maps, step):
    """The maps live at `step` (written at or before it, read at or after it)."""
    return [m for m in maps if m.first <= step <= m.last]


def peak(maps):
    """(words per bank, step, live maps) where the live maps need the most."""
    best = (0, None, [])
    for step in sorted({m.first for m in maps}):
        live = live_at(maps, step)
        total = sum(m.words for m in live)
        if total > best[0]:
            best = (total, step, live)
    return best


def allocate(maps, depth):
    """An `Allocation` of `maps` (in the order their producers run) in an
    activation memory of `depth` words per bank; a UserError naming
    `act_depth` if even reuse does not fit."""
    for before, after in zip(maps, maps[1:]):
        if after.first < before.first:
            raise ValueError("maps must be given in the order they are written")
    keep_all = sum(m.words for m in maps)
    if keep_all <= depth:
        bases, cursor = [], 0
        for m in maps:
            bases.append(cursor)
            cursor += m.words
        return Allocation(bases, [True] * len(maps), keep_all, keep_all, reused=False)
    for ends in PLACEMENTS:
        bases = _place(maps, depth, ends)
        if bases is not None:
            break
    else:
        _refuse(maps, depth, keep_all)
    survives = [not any(bases[j] < bases[i] + maps[i].words and bases[i] < bases[j] + maps[j].words
                        for j in range(i + 1, len(maps)) if maps[j].words)
                for i in range(len(maps))]
    used = max((b + m.words for b, m in zip(bases, maps)), default=0)
    return Allocation(bases, survives, used, keep_all, reused=True)


# Which end of the free space each map takes, tried in this order: all from
# address 0 (first fit); all from the top; producers alternating ends, so a
# chain's consecutive maps never straddle each other's holes. On 3,000 random
# graphs of tests/sw/compile/test_act_alloc.py with a depth between the peak
# and keeping all, first fit alone fails 405 times, the three in turn 127
# (placing sized intervals at the peak is NP-hard in general).
PLACEMENTS = (("low",), ("high",), ("low", "high"))


def _place(maps, depth, ends):
    """Bases for `maps`, each placed in the lowest (or highest) free gap big
    enough, map i taking `ends[i % len(ends)]`; None if one does not fit."""
    bases = []
    for index, m in enumerate(maps):
        # Maps placed earlier are written no later; one is live with `m`
        # while its last reader has not run before `m` is written.
        busy = sorted((bases[j], bases[j] + maps[j].words) for j in range(index)
                      if maps[j].last >= m.first and maps[j].words)
        gaps, cursor = [], 0
        for start, end in busy:
            if start - cursor >= m.words:
                gaps.append((cursor, start))
            cursor = max(cursor, end)
        if depth - cursor >= m.words:
            gaps.append((cursor, depth))
        if not gaps:
            return None
        if ends[index % len(ends)] == "low":
            bases.append(gaps[0][0])
        else:
            bases.append(gaps[-1][1] - m.words)
    return bases


def _refuse(maps, depth, keep_all):
    words, _, live = peak(maps)
    names = ", ".join(m.name for m in live)
    if words > depth:
        where = (f"need {words} words per bank at their peak, while {names} are live (each map "
                 f"reuses the space of maps no later layer reads; keeping every map would need "
                 f"{keep_all})")
    else:
        # The live maps would fit, but no placement tried leaves a big enough hole.
        where = (f"need {words} words per bank at their peak ({names} live), but placed in layer "
                 f"order (first fit, last fit, alternating ends) they leave no hole big enough")
    raise UserError(f"the network's activation maps {where}; the activation memory holds {depth} "
                    f"(act_depth): choose a configuration with more activation memory")
