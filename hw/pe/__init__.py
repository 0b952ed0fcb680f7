"""Processing elements: the fused 2/4-bit PE and the fixed 4-bit baseline."""

from hw.pe.fixed import FixedPE
from hw.pe.fused import Brick, FusedPE
from hw.pe.modes import PeMode, pack_activations, pack_weights

__all__ = ["Brick", "FixedPE", "FusedPE", "PeMode", "pack_activations", "pack_weights"]
