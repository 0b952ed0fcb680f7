"""The core's event counters (hw/counters.py, docs/isa.md "Counters")."""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.counters import COUNTERS
from hw.isa import MAX_PLANES
from hw.pe import PeMode


def built_counters(config):
    """The counters `config` builds: all, or without config.counters only
    `cycles` (the others read 0)."""
    return COUNTERS if config.counters else COUNTERS[:1]


def event_layout(config):
    """The events of one cycle, one field per built counter, each as wide as
    its most events in a cycle."""
    rows, cols = config.rows, config.cols
    most = {"weight_reads": rows * MAX_PLANES, "act_reads": cols, "shortcut_reads": cols, "oab_reads": 2,
            **{f"macs_{mode.name.lower()}": rows * cols * mode.lanes for mode in PeMode}}
    return data.StructLayout({name: range(most.get(name, 1) + 1) for name in built_counters(config)})


class CounterBank(wiring.Component):
    """One counter per built event, `config.counter_width` bits (wrapping):
    cleared by `start`, adding its events every cycle while `running`."""

    def __init__(self, config):
        self._config = config
        super().__init__({
            "start": In(1),
            "running": In(1),
            "events": In(event_layout(config)),
            "counters": Out(data.ArrayLayout(config.counter_width, len(built_counters(config)))),
        })

    def elaborate(self, platform):
        m = Module()
        for index, name in enumerate(built_counters(self._config)):
            counter = Signal(self._config.counter_width, name=f"counter_{name}")
            with m.If(self.start):
                m.d.sync += counter.eq(0)
            with m.Elif(self.running):
                m.d.sync += counter.eq(counter + self.events[name])
            m.d.comb += self.counters[index].eq(counter)
        return m
