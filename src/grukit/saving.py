"""The native ``.grukit`` file: one zip archive, no pickle, written atomically.

Inside the archive:
    grukit.json                 format name and version, the model config, compile settings,
                                the optimizer's config and counters, the epoch count, the states
                                of the random generators, and the names of the arrays below
    weights/NNNN.npy            every weight in full precision, in get_weights() order
    optimizer/<slot>.npy        the optimizer's flat state vectors (Adam's m and v, ...)

Arrays are written with ``np.save(allow_pickle=False)`` and read with ``np.load(allow_pickle=
False)``; JSON is only parsed, never evaluated: loading executes nothing from the file. The zip
CRC of every member is checked on reading, so a truncated or corrupted file raises a ValueError
that says so. A save goes to a temporary file beside the target, is flushed to disk, and only then
renamed over it: a save killed midway leaves the previous file intact.

Saving the optimizer state, the epoch count and the model's training generator means that training
resumed from a file equals uninterrupted training, bit for bit.
"""
import io
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "grukit"
FORMAT_VERSION = 1
MANIFEST = "grukit.json"


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _rng_state(g):
    return None if g is None else g.bit_generator.state


def _set_rng_state(state):
    if state is None:
        return None
    g = np.random.default_rng()
    if state.get("bit_generator") != type(g.bit_generator).__name__:
        raise ValueError(f"unsupported random generator {state.get('bit_generator')!r}")
    g.bit_generator.state = state
    return g


def save_model(model, path, include_optimizer=True):
    """Write ``model`` (config, weights, and optimizer state) to ``path`` atomically."""
    from . import __version__, config as cfg
    model._ensure_built()
    weights = model.get_weights()
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "grukit_version": __version__,
        "floatx": str(weights[0].dtype) if weights else cfg.floatx(),
        "model": {"class_name": type(model).__name__, "config": model.get_config()},
        "weights": [f"weights/{i:04d}.npy" for i in range(len(weights))],
        "epochs_trained": model.epochs_trained,
        "rng": {"train": _rng_state(model._train_rng),
                "layers": {layer.name: _rng_state(getattr(layer, "_rng", None))
                           for layer in model.layers if getattr(layer, "_rng", None) is not None}},
        "compile": None,
    }
    slots = {}
    if model.optimizer is not None and model.loss is not None:
        opt = model.optimizer
        state = opt.get_state() if include_optimizer else None
        manifest["compile"] = {
            "optimizer": opt.get_config(), "loss": model.loss.get_config(),
            "metrics": [m for m in model._metric_ids if isinstance(m, str)],
            "optimizer_state": None if state is None else {
                "iterations": state["iterations"], "learning_rate": state["learning_rate"],
                "slots": {k: f"optimizer/{k}.npy" for k in state["slots"]}},
        }
        slots = {} if state is None else state["slots"]

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            z.writestr(MANIFEST, json.dumps(manifest))
            for name, w in zip(manifest["weights"], weights):
                z.writestr(name, _npy_bytes(w))
            for k, v in slots.items():
                z.writestr(f"optimizer/{k}.npy", _npy_bytes(v))

    atomic_write(path, write)


class _Reader:
    """Reads members of an archive, turning every failure into a ValueError naming the file."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def fail(self, what):
        raise ValueError(f"{self.path}: {what}. It is not a readable grukit model file; re-save "
                         "the model, or restore the file from a backup.") from None

    def open(self):
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"{self.path}: no such file.")
        if os.path.getsize(self.path) == 0:
            self.fail("the file is empty")
        try:
            return zipfile.ZipFile(self.path)
        except zipfile.BadZipFile as e:
            self.fail(f"the file is truncated or not a zip archive ({e})")

    def read(self, z, name):
        try:
            return z.read(name)
        except KeyError:
            self.fail(f"the member {name!r} is missing")
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            self.fail(f"the member {name!r} is damaged ({e})")

    def array(self, z, name):
        try:
            return np.load(io.BytesIO(self.read(z, name)), allow_pickle=False)
        except ValueError as e:
            self.fail(f"the array {name!r} cannot be read ({e})")


def load_model(path, compile=True):
    """Read a ``.grukit`` file back into a Sequential model, compiled when it was saved so."""
    from .models import Sequential
    from . import losses, optimizers
    r = _Reader(path)
    with r.open() as z:
        try:
            manifest = json.loads(r.read(z, MANIFEST).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            r.fail(f"its manifest is not valid JSON ({e})")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            r.fail("its manifest does not name the grukit format")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"{r.path}: format version {version!r}, but this grukit reads version "
                             f"{FORMAT_VERSION}; upgrade grukit or re-save the model with this one.")
        try:
            model = Sequential.from_config(manifest["model"]["config"])
            weights = [r.array(z, name) for name in manifest["weights"]]
            from . import config as cfg
            dtype = manifest.get("floatx", cfg.floatx())
            if dtype != cfg.floatx():
                raise ValueError(f"{r.path}: the model was saved in {dtype}; call "
                                 f"grukit.config.set_floatx({dtype!r}) before loading it.")
            model.build()
            model.set_weights(weights)
            model.epochs_trained = int(manifest.get("epochs_trained", 0))
            rng = manifest.get("rng") or {}
            model._train_rng = _set_rng_state(rng.get("train"))
            for layer in model.layers:
                state = (rng.get("layers") or {}).get(layer.name)
                if state is not None:
                    layer._rng = _set_rng_state(state)
            comp = manifest.get("compile")
            if compile and comp:
                model.compile(optimizer=optimizers.from_config(comp["optimizer"]),
                              loss=losses.from_config(comp["loss"]), metrics=comp["metrics"] or None)
                st = comp.get("optimizer_state")
                if st is not None:
                    model.optimizer.set_state({
                        "iterations": st["iterations"], "learning_rate": st["learning_rate"],
                        "slots": {k: r.array(z, name) for k, name in st["slots"].items()}})
        except (KeyError, TypeError) as e:
            r.fail(f"its manifest lacks or garbles an entry ({e!r})")
    return model
