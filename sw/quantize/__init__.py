"""Quantization-aware retraining and integer export (see docs/quantize.md).

    from sw.quantize import parse_precision, quantize_network, calibrate, write_model_file
    qnet = quantize_network(my_float_net, parse_precision("w4a4,first=w8,last=w8"),
                            input_shape=(3, 32, 32), input_mean=MEAN, input_std=STD)
    calibrate(qnet, some_uint8_images)
    ...retrain qnet on raw 0..255 pixels (as floats) with any optimizer...
    write_model_file(qnet, "model.mpq")
    IntegerModel.load("model.mpq")(uint8_images)  # int64 logits
"""

from common.lazy import lazy_getattr

_EXPORTS = {
    "PrecisionConfig": "sw.quantize.config",
    "parse_precision": "sw.quantize.config",
    "QuantNetwork": "sw.quantize.convert",
    "calibrate": "sw.quantize.convert",
    "quantize_network": "sw.quantize.convert",
    "read_model_file": "sw.quantize.export",
    "write_model_file": "sw.quantize.export",
    "Normalize": "sw.quantize.models",
    "IntegerModel": "sw.quantize.reference",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
