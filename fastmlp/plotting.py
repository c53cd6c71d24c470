"""Figures written to files with matplotlib's Agg backend (no screen needed)."""
import numpy as np


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'fastmlp[plot]'") from None
    return matplotlib


def _pyplot():
    matplotlib = require_matplotlib()
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    plt = _pyplot()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


LOSS_LABELS = {"cross_entropy": "cross-entropy loss", "quadratic": "quadratic cost"}


def plot_history(history, path, title=None, loss_name="cross_entropy",
                 validation_label="validation"):
    """Learning curves: loss and accuracy per epoch, train and validation. ``loss_name`` is the
    network's loss ("cross_entropy" or "quadratic"); ``validation_label`` names the held-out
    curve ("test" when the test set was passed as validation data)."""
    from matplotlib.ticker import MaxNLocator
    plt = _pyplot()
    h = history.history if hasattr(history, "history") else history
    epochs = np.arange(1, len(h["loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((ax_loss, "loss", LOSS_LABELS.get(loss_name, loss_name)),
                           (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, h[key], "o-", label="train")
        val = [np.nan if v is None else v for v in h.get(f"val_{key}", [])]
        if len(val) and not np.all(np.isnan(val)):
            ax.plot(epochs, val, "s-", label=validation_label or "validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_confusion(cm, path, title="Confusion matrix"):
    plt = _pyplot()
    k = cm.shape[0]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * k, 0.6 * k + 0.5))
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def plot_errors(images, y_true, y_pred, path, max_images=36):
    """A grid of misclassified digits, each titled 'pred P / true T'."""
    plt = _pyplot()
    wrong = np.flatnonzero(np.asarray(y_true) != np.asarray(y_pred))[:max_images]
    n = max(len(wrong), 1)
    cols = min(n, 9)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows), squeeze=False)
    side = int(round(np.sqrt(images.shape[1]))) if images.ndim == 2 else images.shape[1]
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(images[i].reshape(side, -1), cmap="gray_r")
        ax.set_title(f"pred {y_pred[i]} / true {y_true[i]}", fontsize=7)
    if not len(wrong):
        axes[0, 0].set_title("no errors")
    return _save(fig, path)


def plot_compare(histories, path, title=None):
    """Several runs' learning curves on one figure: loss and accuracy per epoch, each run in its
    own colour, training dashed and validation solid. For the course's optimizer comparison
    (one run per optimizer) and for overfitting (a run with and one without dropout or L2).
    ``histories`` maps a label to a History (or its ``history`` dict)."""
    if not histories:
        raise ValueError("plot_compare needs at least one history")
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for k, (label, history) in enumerate(histories.items()):
        h = history.history if hasattr(history, "history") else history
        color = f"C{k % 10}"
        for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            train = np.asarray(h[key], dtype=float)
            epochs = np.arange(1, len(train) + 1)
            ax.plot(epochs, train, "--", color=color, label=f"{label} (train)")
            val = np.array([np.nan if v is None else v for v in h.get(f"val_{key}", [])], float)
            if len(val) and not np.all(np.isnan(val)):
                ax.plot(epochs[:len(val)], val, "-", color=color, label=f"{label} (validation)")
    from matplotlib.ticker import MaxNLocator
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
