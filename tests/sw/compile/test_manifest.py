"""What the manifest says about activation storage: each layer's precision
beside the bits the activation memory keeps per value."""

import dataclasses

from hw.config import get_config
from sw.compile.network import compile_network
from sw.energy.designs import act_write_bits
from sw.quantize.export import read_model_file
from tests.sim.conftest import make_model_file


def test_the_manifest_gives_each_layers_activation_bits_and_what_is_stored(tmp_path):
    for precision, bits in (("w4a4,first=w8,last=w8", 4), ("w4a3", 3), ("w2a2", 2)):
        model = make_model_file(tmp_path / f"{bits}.mpq", precision=precision)
        network = compile_network(*read_model_file(model), get_config("small"))
        layers = network.manifest["layers"]
        assert [layer["act_bits"] for layer in layers[:-1]] == [bits] * (len(layers) - 1)
        # Slots of the precision (packed_activations); the activation memory
        # the maps take shrinks with them.
        assert {layer["act_bits_stored"] for layer in layers[:-1]} == {bits}
        assert layers[-1]["raw"] and layers[-1]["act_bits"] is None
        assert layers[-1]["act_bits_stored"] == 32
        # What the energy model prices the writes at.
        assert act_write_bits(network) == bits
        # A core without packed slots keeps 4 bits a value, in more words.
        config = dataclasses.replace(get_config("small"), name="small_unpacked",
                                     packed_activations=False)
        unpacked = compile_network(*read_model_file(model), config)
        assert {layer["act_bits_stored"] for layer in unpacked.manifest["layers"][:-1]} == {4}
        words = [n.manifest["activation_words"]["keep_all"] for n in (network, unpacked)]
        assert (words[0] < words[1]) == (bits < 4)
