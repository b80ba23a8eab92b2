"""Callbacks with Keras's hooks and defaults: History, EarlyStopping, ReduceLROnPlateau,
TerminateOnNaN, and the per-epoch progress line of ``verbose=1``/``2``."""
import sys
import time
import warnings

import numpy as np


class Callback:
    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass


class History(Callback):
    """Per-epoch logs: ``history.history["loss"]`` and so on; ``history.epoch`` the epoch numbers."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


class ProgressLine(Callback):
    """Keras-like progress: ``Epoch 3/10`` then ``2/2 - 0s - 3ms/step - loss: 0.1234``."""

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        out = self.stream or sys.stdout
        print(f"Epoch {epoch + 1}/{self.params.get('epochs', '?')}", file=out)

    def on_epoch_end(self, epoch, logs=None):
        out = self.stream or sys.stdout
        dt = time.perf_counter() - self._t0
        steps = self.params.get("steps", 1) or 1
        parts = [f"{steps}/{steps}", f"{dt:.0f}s", f"{1000 * dt / steps:.0f}ms/step"]
        parts += [f"{k}: {v:.4f}" for k, v in (logs or {}).items() if k != "learning_rate"]
        print(" - ".join(parts), file=out)


def _monitor_op(mode, monitor):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}.")
    if mode == "auto":
        mode = "max" if ("acc" in monitor or monitor.startswith("auc")) else "min"
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights=True`` the weights of the best epoch are restored at the end.
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        self.monitor, self.patience, self.verbose = monitor, int(patience), verbose
        self.mode = _monitor_op(mode, monitor)
        self.min_delta = abs(min_delta)
        self.baseline, self.restore_best_weights = baseline, restore_best_weights
        self.start_from_epoch = start_from_epoch

    def _improves(self, current, reference):
        if reference is None:
            return True
        if self.mode == "min":
            return current + self.min_delta < reference
        return current - self.min_delta > reference

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best, self.best_weights, self.best_epoch = 0, 0, None, None, 0

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(f"EarlyStopping: monitor {self.monitor!r} is not in the logs "
                          f"(available: {', '.join(logs or {})}).", stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if self._improves(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._improves(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        super().__init__()
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be < 1, got {factor!r}.")
        self.monitor, self.factor, self.patience, self.verbose = monitor, factor, patience, verbose
        self.mode = _monitor_op(mode, monitor)
        self.min_delta, self.cooldown, self.min_lr = min_delta, cooldown, min_lr
        self._reset()

    def _reset(self):
        self.best = np.inf if self.mode == "min" else -np.inf
        self.wait, self.cooldown_counter = 0, 0

    def on_train_begin(self, logs=None):
        self._reset()

    def _improves(self, current):
        if self.mode == "min":
            return current < self.best - self.min_delta
        return current > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        opt = self.model.optimizer
        logs["learning_rate"] = opt.learning_rate
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"ReduceLROnPlateau: monitor {self.monitor!r} is not in the logs "
                          f"(available: {', '.join(logs)}).", stacklevel=2)
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improves(current):
            self.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience and opt.learning_rate > self.min_lr:
                new_lr = max(opt.learning_rate * self.factor, self.min_lr)
                opt.learning_rate = new_lr
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.")
                self.cooldown_counter, self.wait = self.cooldown, 0


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch's loss is NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class ModelCheckpoint(Callback):
    """Save the model after each epoch (or only when ``monitor`` improves, with
    ``save_best_only=True``) in grukit's native format (``.keras`` names give Keras's).

    ``filepath`` may hold ``{epoch}`` and log keys, as in Keras: ``"ckpt-{epoch:02d}.grukit"``.
    Each write is atomic: a crash mid-save leaves the previous checkpoint intact.
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", initial_value_threshold=None):
        super().__init__()
        self.filepath, self.monitor, self.verbose = str(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.mode = _monitor_op(mode, monitor)
        self.best = initial_value_threshold

    def _improves(self, current):
        if self.best is None:
            return True
        return current < self.best if self.mode == "min" else current > self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(f"ModelCheckpoint: monitor {self.monitor!r} is not in the logs "
                              f"(available: {', '.join(logs)}); nothing saved.", stacklevel=2)
                return
            if not self._improves(current):
                return
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best} to {current}, "
                      f"saving model to {path}")
            self.best = current
        if self.save_weights_only and path.endswith(".h5"):
            self.model.save_weights(path)
        else:
            self.model.save(path)
