"""Callbacks for ``fit(callbacks=[...])``. A plain function is called as ``f(epoch, metrics)``
after every epoch; an object may also have ``on_train_begin(net)``, ``on_train_end(net)`` and a
``stop_training`` attribute that fit reads after every epoch."""
import math


class Callback:
    stop_training = False

    def on_train_begin(self, net):
        pass

    def __call__(self, epoch, metrics):
        pass

    def on_train_end(self, net):
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs; with
    ``restore_best``, the network ends with the weights of its best epoch."""

    def __init__(self, monitor="val_loss", patience=10, restore_best=True, min_delta=0.0):
        if monitor not in ("loss", "accuracy", "val_loss", "val_accuracy"):
            raise ValueError(f"monitor must be loss, accuracy, val_loss or val_accuracy, got "
                             f"{monitor!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        if not isinstance(min_delta, (int, float)) or not math.isfinite(min_delta) or min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        self.monitor, self.patience = monitor, patience
        self.restore_best, self.min_delta = bool(restore_best), float(min_delta)

    def on_train_begin(self, net):
        self.net, self.best, self.best_epoch, self.wait = net, None, None, 0
        self.best_weights, self.stop_training = None, False

    def __call__(self, epoch, metrics):
        value = metrics.get(self.monitor)
        if value is None or value != value:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which fit does not "
                             f"measure: give validation data")
        lower = "loss" in self.monitor
        improved = self.best is None or (value < self.best - self.min_delta if lower
                                         else value > self.best + self.min_delta)
        if improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_weights = [a.copy() for a in self.net.weights + self.net.biases]
        else:
            self.wait += 1
            self.stop_training = self.wait >= self.patience

    def on_train_end(self, net):
        if self.restore_best and self.best_weights is not None:
            for dst, src in zip(net.weights + net.biases, self.best_weights):
                dst[...] = src
