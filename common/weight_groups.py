"""The weight group: `GROUP_SIZE` consecutive input channels of one output
channel at one kernel position, sharing one precision and one shift.

It is the hardware's unit (a weight bit-plane word, the channels of one chunk:
`hw/isa.py`) and the group that MPQ's hardware granularity and the model
file's default use (`sw/quantize`). It is defined here, below both, because
training does not import the hardware.
"""

GROUP_SIZE = 16
