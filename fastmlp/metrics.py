"""Classification metrics computed by the library (checked against scikit-learn in tests)."""
import numpy as np


def confusion_matrix(y_true, y_pred, n_classes=None):
    """counts[i, j] = number of samples of true class i predicted as j."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {y_true.shape} "
                         f"and {y_pred.shape}")
    if n_classes is None:
        n_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
    counts = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


def _safe_div(num, den):
    return np.divide(num, den, out=np.zeros(np.shape(num), dtype=np.float64), where=den > 0)


def classification_report(y_true, y_pred, n_classes=None):
    """Per-class precision, recall, F1 and support, with accuracy and macro/weighted averages.

    Returns a dict shaped like scikit-learn's ``classification_report(output_dict=True)``;
    a ratio with a zero denominator is 0.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    report = {str(k): {"precision": precision[k], "recall": recall[k], "f1-score": f1[k],
                       "support": int(support[k])} for k in range(cm.shape[0])}
    total = int(support.sum())
    report["accuracy"] = float(tp.sum() / total) if total else 0.0
    report["macro avg"] = {"precision": precision.mean(), "recall": recall.mean(),
                           "f1-score": f1.mean(), "support": total}
    w = support / total if total else np.zeros_like(precision)
    report["weighted avg"] = {"precision": float(precision @ w), "recall": float(recall @ w),
                              "f1-score": float(f1 @ w), "support": total}
    return report


def format_report(report, class_names=None, digits=4):
    """The report as a text table, like scikit-learn's."""
    classes = [k for k in report if k not in ("accuracy", "macro avg", "weighted avg")]
    names = [str(class_names[int(k)]) if class_names else k for k in classes]
    width = max(12, *(len(n) for n in names))
    head = f"{'':>{width}} {'precision':>10} {'recall':>10} {'f1-score':>10} {'support':>10}"
    lines = [head, ""]
    for key, name in zip(classes, names):
        r = report[key]
        lines.append(f"{name:>{width}} {r['precision']:>10.{digits}f} {r['recall']:>10.{digits}f} "
                     f"{r['f1-score']:>10.{digits}f} {r['support']:>10}")
    total = report["macro avg"]["support"]
    lines += ["", f"{'accuracy':>{width}} {'':>10} {'':>10} {report['accuracy']:>10.{digits}f} "
                  f"{total:>10}"]
    for key in ("macro avg", "weighted avg"):
        r = report[key]
        lines.append(f"{key:>{width}} {r['precision']:>10.{digits}f} {r['recall']:>10.{digits}f} "
                     f"{r['f1-score']:>10.{digits}f} {r['support']:>10}")
    return "\n".join(lines)


def format_confusion(cm):
    k = cm.shape[0]
    width = max(5, len(str(int(cm.max()))) + 1)
    lines = ["true \\ pred " + "".join(f"{j:>{width}}" for j in range(k))]
    for i in range(k):
        lines.append(f"{i:>11} " + "".join(f"{int(c):>{width}}" for c in cm[i]))
    return "\n".join(lines)
