"""Quantization-aware retraining and integer export (see docs/quantize.md).

    from sw.quantize import parse_precision, quantize_network, calibrate, write_model_file
    qnet = quantize_network(my_float_net, parse_precision("w4a4,first=w8,last=w8"),
                            input_shape=(3, 32, 32), input_mean=MEAN, input_std=STD)
    calibrate(qnet, some_uint8_images)
    ...retrain qnet on raw 0..255 pixels (as floats) with any optimizer...
    write_model_file(qnet, "model.mpq")
    IntegerModel.load("model.mpq")(uint8_images)  # int64 logits
"""

from sw.quantize.config import PrecisionConfig, parse_precision
from sw.quantize.convert import QuantNetwork, calibrate, quantize_network
from sw.quantize.export import read_model_file, write_model_file
from sw.quantize.models import Normalize
from sw.quantize.reference import IntegerModel

__all__ = ["PrecisionConfig", "parse_precision", "QuantNetwork", "calibrate", "quantize_network",
           "read_model_file", "write_model_file", "Normalize", "IntegerModel"]
