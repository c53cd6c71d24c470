"""The training loop: everything one fit needs is made once, then epochs run in chunks of
steps inside the compiled ``train_steps`` (or its NumPy twin)."""
import math
import time
from contextlib import nullcontext

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (the BLAS Numba calls: loaded before it is limited)
from threadpoolctl import threadpool_limits

from . import kernels as K
from .errors import TrainingDivergedError

# Fraction of nonzero inputs under which the first layer skips zeros. Measured on 2 cores with
# 784-300-10: skipping zeros wins below ~30 % nonzero (MNIST: 19 %) and loses above, at batch
# 64 and at 256 alike (Fashion-MNIST, ~50 % nonzero, takes the dense sgemm path).
SPARSE_INPUT_DENSITY = 0.3


def uses_sparse_input(net, X):
    """Whether the Numba path runs the first layer on X's nonzeros (on Numba's threads)."""
    return bool(net.backend == "numba" and np.count_nonzero(X) < SPARSE_INPUT_DENSITY * X.size)


def one_blas_thread(active=True):
    """While Numba's threads work, BLAS gets one thread: BLAS threads spinning beside them
    (OpenBLAS spins ~0.1 s after each call) would starve both on a small machine."""
    return threadpool_limits(1, user_api="blas") if active else nullcontext()


class Trainer:
    """Validated data, optimizer state and every buffer of one fit.

    ``run_epoch`` runs the steps of one epoch in chunks; between chunks it keeps a copy of the
    parameters so that a non-finite loss can be rolled back to the last finite state, and it
    asks ``should_stop`` whether to return early (Ctrl-C) at a step boundary.
    """

    def __init__(self, net, X, y, batch_size, optimizer, shuffle=True, chunks_per_epoch=8):
        self.net, self.X, self.y = net, X, y
        self.batch_size, self.shuffle = batch_size, shuffle
        self.n = X.shape[0]
        self.steps = -(-self.n // batch_size)
        self.chunk = max(1, -(-self.steps // chunks_per_epoch))
        self.vW = [np.zeros_like(w) for w in net.weights]
        self.vb = [np.zeros_like(b) for b in net.biases]
        self.ws = K.make_workspace(net.sizes, batch_size, net.dtype)
        t = net.dtype.type
        self.optimizer = optimizer
        self.hyper = (net._act_code, t(optimizer.lr), t(optimizer.momentum),
                      t(optimizer.weight_decay))
        self.sparse = uses_sparse_input(net, X)
        self.train_steps = net._ops()["train_steps"]
        self._saved = None

    def _params(self):
        net = self.net
        return tuple(net.weights), tuple(net.biases), tuple(self.vW), tuple(self.vb)

    def run_epoch(self, epoch, step=0, totals=(0.0, 0, 0, 0.0), should_stop=None, on_chunk=None,
                  until=None):
        """Run steps [step, until or steps) of ``epoch``; returns (loss_sum, correct, seen, step,
        seconds) accumulated onto ``totals``. ``step < self.steps`` on return means the epoch is
        not finished (stopped, or ``until`` reached)."""
        end = self.steps if until is None else min(until, self.steps)
        Ws, bs, vWs, vbs = self._params()
        live = Ws + bs + vWs + vbs
        if self._saved is None or len(self._saved) != len(live):
            self._saved = [np.empty_like(a) for a in live]
        ws = self.ws
        order = self.net.epoch_order(epoch, self.n, self.shuffle)
        loss_sum, correct, seen, elapsed = totals
        with one_blas_thread(self.sparse):
            t0 = time.perf_counter()
            while step < end and not (should_stop and should_stop()):
                for src, dst in zip(live, self._saved):
                    np.copyto(dst, src)
                stop = min(step + self.chunk, end)
                ls, c, s = self.train_steps(
                    self.X, self.y, order, self.batch_size, step, stop, Ws, bs, vWs, vbs,
                    ws.acts, ws.deltas, ws.grad_W, ws.grad_b, ws.xb, ws.yb, ws.nz_idx, ws.nz_val,
                    ws.nz_cnt, ws.col_ptr, ws.col_row, ws.col_val, ws.col_counts, *self.hyper,
                    self.sparse)
                if not math.isfinite(ls):
                    for src, dst in zip(self._saved, live):
                        np.copyto(dst, src)
                    raise TrainingDivergedError(
                        f"the training loss became {ls / max(s, 1)} in epoch {epoch + 1}, steps "
                        f"{step + 1}..{stop}; the network keeps its weights from before step "
                        f"{step + 1}. Try a smaller lr (now {self.optimizer.lr}) or another init "
                        f"(now {self.net.init!r}).")
                loss_sum, correct, seen = loss_sum + ls, correct + c, seen + s
                step = stop
                if on_chunk is not None:
                    on_chunk(step, loss_sum / seen)
            elapsed += time.perf_counter() - t0
        return loss_sum, correct, seen, step, elapsed
