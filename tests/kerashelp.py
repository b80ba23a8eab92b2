"""Helpers shared by the Keras parity tests."""
import numpy as np


def randomize_biases(keras_obj, rng, scale=0.5):
    """Keras's own weights, with every bias (and nothing else) replaced by random values; the
    result is set back into ``keras_obj`` and returned, ready for grukit."""
    names = [v.name for v in keras_obj.weights]
    ws = keras_obj.get_weights()
    assert len(names) == len(ws)
    out = []
    for name, w in zip(names, ws):
        if name == "bias":
            w = rng.normal(0.0, scale, w.shape)
        out.append(np.asarray(w, np.float32))
    keras_obj.set_weights(out)
    return out
