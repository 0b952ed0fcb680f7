"""Processing elements: the fused 2/4-bit PE and the fixed 4-bit baseline."""

from hw.pe.fixed import FixedPE
from hw.pe.fused import Brick, FusedPE
from hw.pe.modes import PeMode, pack_operands, unpack_operands, dot_reference

__all__ = ["Brick", "FixedPE", "FusedPE", "PeMode", "dot_reference", "pack_operands",
           "unpack_operands"]
