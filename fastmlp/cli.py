"""fastmlp: train, evaluate and benchmark neural networks on MNIST-style images, and classify
digit pictures with a trained model."""
import argparse
import csv
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from . import datasets
from ._version import __version__
from .errors import FastMLPError, TrainingDivergedError
from .optimizers import OPTIMIZERS
from .recipes import names as recipe_names

EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A problem with the command line itself; reported in one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (exit 2), like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _DefaultsShown(argparse.HelpFormatter):
    """Each option's default after its help, where it has one worth showing."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        if isinstance(default, list):
            default = ",".join(map(str, default))
        return f"{text} (default: {default})"


def _hidden(text):
    if text.strip() in ("", "none", "0"):
        return []
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes sizes like 300 or 512,256, got {text!r}")
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"--hidden sizes must be >= 1, got {text!r}")
    return sizes


def _data_args(p):
    p.add_argument("--dataset", choices=sorted(datasets.LOADERS) + [datasets.FALLBACK],
                   default=None, help="default: mnist, falling back to the bundled 8x8 digits "
                                      "only when MNIST cannot be found or downloaded")
    p.add_argument("--data-dir", default=None,
                   help=f"folder with the data set's files, the only one searched when given "
                        f"(without it: ${datasets.ENV_VAR}, then the user cache)")


def build_parser():
    parser = _Parser(prog="fastmlp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fastmlp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a network and report its test accuracy",
                       formatter_class=_DefaultsShown)
    _data_args(t)
    t.add_argument("--recipe", default=None, choices=recipe_names(),
                   help="a named recipe (see 'fastmlp recipes'); explicit flags override it")
    t.add_argument("--hidden", type=_hidden, default=[300], help="e.g. 300 or 512,256")
    t.add_argument("--activation", default="relu", choices=["relu", "sigmoid", "tanh"],
                   help="hidden layers' activation")
    t.add_argument("--init", default="he", choices=["he", "xavier", "normal", "large"],
                   help="weight initialisation")
    t.add_argument("--epochs", type=int, default=20, help="epochs to train")
    t.add_argument("--batch-size", type=int, default=256, help="minibatch size")
    t.add_argument("--optimizer", default=None, choices=sorted(OPTIMIZERS),
                   help="default: SGD with --lr, --momentum and --weight-decay")
    t.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 0.1 for SGD, else the optimizer's own)")
    t.add_argument("--momentum", type=float, default=0.9,
                   help="SGD momentum (0 for plain SGD)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay")
    t.add_argument("--dropout", type=float, default=0.0, help="dropout rate of hidden layers")
    t.add_argument("--input-dropout", type=float, default=0.0, help="dropout rate of the inputs")
    t.add_argument("--max-norm", type=float, default=None,
                   help="cap on the L2 norm of each hidden unit's incoming weights")
    t.add_argument("--output", default="softmax", choices=["softmax", "sigmoid"],
                   help="output activation")
    t.add_argument("--loss", default="cross_entropy", choices=["cross_entropy", "quadratic"],
                   help="cost function")
    t.add_argument("--validation-size", type=int, default=0,
                   help="carve a validation split from the training set; with 0 the per-epoch "
                        "val_ columns are measured on the test set")
    t.add_argument("--seed", type=int, default=0, help="initial weights and minibatch order")
    t.add_argument("--backend", default="numba", choices=["numba", "numpy"],
                   help="numba: the fast kernels; numpy: their reference twins")
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="floating-point type of weights and data")
    t.add_argument("--out", default="model.npz", help="where to save the trained model")
    t.add_argument("--checkpoint", default=None, help="save a resumable checkpoint every epoch")
    t.add_argument("--resume", default=None, help="continue from a checkpoint")
    t.add_argument("--plot", default=None, help="learning curves image, e.g. curves.png")
    t.add_argument("--log", default=None, help="per-epoch metrics, .csv or .jsonl")
    t.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="TensorBoard event files of this run, in a new folder below DIR "
                        "(watch with: tensorboard --logdir DIR); needs fastmlp[tensorboard]")
    t.add_argument("--quiet", action="store_true", help="no summary, no per-epoch lines")

    e = sub.add_parser("evaluate", help="loss, accuracy, per-class report, confusion matrix")
    e.add_argument("model", help="a model file written by fastmlp train (.npz)")
    _data_args(e)
    e.add_argument("--plot-confusion", default=None, metavar="FILE",
                   help="the confusion matrix as an image, e.g. cm.png")
    e.add_argument("--plot-errors", default=None, metavar="FILE",
                   help="a grid of misclassified test digits")
    e.add_argument("--backend", default="numba", choices=["numba", "numpy"],
                   help="numba: the fast kernels; numpy: their reference twins")

    p = sub.add_parser("predict", help="classify digit images (PNG/JPG or .npy)")
    p.add_argument("model", help="a model file written by fastmlp train (.npz)")
    p.add_argument("images", nargs="+", help="PNG/JPG pictures of single digits, or .npy arrays")
    p.add_argument("--top-k", type=int, default=3, help="how many of the likeliest classes to show")
    p.add_argument("--backend", default="numba", choices=["numba", "numpy"],
                   help="numba: the fast kernels; numpy: their reference twins")

    x = sub.add_parser("export", help="write a model (or a FastMLPClassifier file) as ONNX, "
                                      "for ONNX Runtime and other runtimes")
    x.add_argument("model", help="a model file written by fastmlp (.npz)")
    x.add_argument("out", help="the ONNX file to write (.onnx)")
    x.add_argument("--opset", type=int, default=None, help="the ONNX opset (default 17)")
    x.add_argument("--flat-input", action="store_true",
                   help="an image network takes flat rows (N, h*w*c), not (N, h, w, c) images")

    sv = sub.add_parser("serve", help="a page to draw digits on and see what the model reads, "
                                      "with a JSON API (needs fastmlp[serve])")
    sv.add_argument("model", help="a model file written by fastmlp (.npz)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="the address to listen on (127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="the port to listen on")

    sub.add_parser("recipes", help="list the named recipes and what each trains")
    wu = sub.add_parser("warmup", help="compile ahead what training and predicting will run "
                                       "(for CI, Docker images, a cluster's workers)")
    which = wu.add_mutually_exclusive_group()
    which.add_argument("--recipe", action="append", choices=recipe_names(), default=None,
                       dest="recipes",
                       help="a recipe's network and fit settings (repeatable); default: the "
                            "default network of 'fastmlp train'")
    which.add_argument("--all", action="store_true", help="every recipe and the default network")
    wu.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                    help="default float32")
    a = sub.add_parser("augment-preview",
                       help="a picture of training images beside their random distortions")
    a.add_argument("--out", required=True, help="the picture (.png)")
    a.add_argument("--dataset", choices=sorted(datasets.LOADERS) + [datasets.FALLBACK],
                   default=None, help="default: mnist")
    a.add_argument("--data-dir", default=None)
    a.add_argument("--count", type=int, default=8, help="images shown (default 8)")
    a.add_argument("--shift", type=float, default=2.0, help="pixels (default 2)")
    a.add_argument("--rotate", type=float, default=10.0, help="degrees (default 10)")
    a.add_argument("--scale", type=float, default=0.1, help="fraction (default 0.1)")
    a.add_argument("--elastic-alpha", type=float, default=34.0, help="default 34 (Simard)")
    a.add_argument("--elastic-sigma", type=float, default=4.0, help="default 4 (Simard)")
    a.add_argument("--interpolation", choices=["bilinear", "nearest"], default="bilinear",
                   help="how the distorted images sample the originals (default bilinear)")
    a.add_argument("--seed", type=int, default=0)

    w = sub.add_parser("sweep", help="a study: many trainings over widths, seeds, training-set "
                                     "sizes or optimizers, averaged and plotted")
    _data_args(w)
    w.add_argument("--hidden", default="300", help="widths to compare, e.g. 128,256,512 (one "
                                                   "hidden layer each)")
    w.add_argument("--seeds", default="0-2", help="seeds, e.g. 0-9 or 0,1,2")
    w.add_argument("--train-sizes", default=None, help="training-set sizes, e.g. 1000,60000")
    w.add_argument("--optimizers", default=None, help="optimizers to compare, e.g. sgd,adam")
    w.add_argument("--epochs", type=int, default=10)
    w.add_argument("--batch-size", type=int, default=128)
    w.add_argument("--backend", default="local",
                   choices=["local", "threads", "sequential", "dask", "ray"],
                   help="local: a process pool on this machine; threads: this process's "
                        "threads (no workers to start: best for short trials)")
    w.add_argument("--jobs", type=int, default=2, help="trials run at once")
    w.add_argument("--scheduler", default=None, help="a Dask scheduler address (dask backend)")
    w.add_argument("--address", default=None, help="a Ray cluster address (ray backend)")
    w.add_argument("--out", default="sweep.csv", help="results table (.csv); the resumable "
                                                      "log goes beside it as .jsonl")
    w.add_argument("--plot", default=None, help="accuracy against the swept setting, e.g. w.png")

    b = sub.add_parser("bench", help="time one epoch against the NumPy reference, PyTorch, JAX "
                                     "and the sgemm floor")
    harness = bench_harness()
    if harness is not None:
        harness.add_arguments(b)
    return parser


BENCH_MISSING = ("fastmlp bench needs the benchmark harness, bench/harness.py of fastmlp's "
                 "repository, which is not part of the installed package (nor is PyTorch or "
                 "JAX, which it compares against). Run it from a clone of the repository: "
                 "pip install -e . there, then fastmlp bench (or python bench/compare.py)")


def bench_harness():
    """The repository's benchmark harness (``bench/harness.py``) as a module, or None where
    fastmlp is installed without its repository. Looked for beside the package (a source
    checkout, an editable install), then in the working directory's ``bench/``."""
    import importlib.util
    for folder in (Path(__file__).resolve().parent.parent / "bench", Path.cwd() / "bench"):
        path = folder / "harness.py"
        if not path.is_file():
            continue
        loaded = sys.modules.get("harness")
        if loaded is not None and getattr(loaded, "__file__", None) == str(path):
            return loaded
        spec = importlib.util.spec_from_file_location("harness", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["harness"] = module  # the name its worker processes import it by
        spec.loader.exec_module(module)
        return module
    return None


# ---- train ------------------------------------------------------------------------------------
class _EpochLog:
    """Writes one row per epoch as training goes, to .csv or .jsonl."""

    COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "epoch_time", "lr")

    def __init__(self, path):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".csv", ".jsonl"):
            raise CLIError(f"--log must end in .csv or .jsonl, got {path}")
        self.file = open(self.path, "w", newline="")
        if self.path.suffix.lower() == ".csv":
            self.writer = csv.DictWriter(self.file, fieldnames=self.COLUMNS)
            self.writer.writeheader()
        else:
            self.writer = None

    def __call__(self, epoch, metrics):
        row = {"epoch": epoch, **{k: metrics.get(k) for k in self.COLUMNS[1:]}}
        if self.writer:
            self.writer.writerow(row)
        else:
            self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


def _load_data(args, validation_size, dtype="float32", test_only=False):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        name, splits = datasets.load_dataset(args.dataset, args.data_dir,
                                             validation_size=validation_size, dtype=dtype,
                                             test_only=test_only)
    for w in caught:
        print(f"WARNING: {w.message}", file=sys.stderr, flush=True)
    return name, splits


NETWORK_FLAGS = ("hidden", "activation", "init", "dtype", "dropout", "input_dropout", "max_norm",
                 "output", "loss")
OPTIMIZER_FLAGS = ("optimizer", "lr", "momentum", "weight_decay")


def _check_output_path(path, flag):
    """An output file's folder must exist and be writable: checked before any training."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise CLIError(f"{flag} {path}: is a folder; give a file name")
    folder = target.resolve().parent
    if not folder.is_dir():
        raise CLIError(f"{flag} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CLIError(f"{flag} {path}: the folder {folder} is not writable")


def _check_train_args(args):
    """Every flag of train that can be checked without the data, before anything is loaded."""
    if args.epochs < 0:
        raise CLIError(f"--epochs must be >= 0, got {args.epochs}")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.validation_size < 0:
        raise CLIError(f"--validation-size must be >= 0, got {args.validation_size}")
    if args.log and Path(args.log).suffix.lower() not in (".csv", ".jsonl"):
        raise CLIError(f"--log must end in .csv or .jsonl, got {args.log}")
    for flag in ("out", "plot", "log", "checkpoint"):
        _check_output_path(getattr(args, flag), f"--{flag}")
    if args.resume and not Path(args.resume).is_file():
        raise CLIError(f"--resume {args.resume}: no such file")
    if args.plot:
        from .plotting import require_matplotlib
        require_matplotlib()  # before training, not after it
    args.tensorboard_callback = None
    if args.tensorboard:
        from .callbacks import TensorBoard
        args.tensorboard_callback = TensorBoard(args.tensorboard)  # a missing extra: now


def _checkpoint_settings(net):
    """The train flags a checkpoint's network and fit stand for."""
    layers = net.layers
    input_rate = layers[0].rate if layers[0].kind == "dropout" else 0.0
    rates = [layer.rate for layer in layers[1:] if layer.kind == "dropout"]
    return {"hidden": list(net.sizes[1:-1]), "activation": net.activation, "init": net.init,
            "dtype": net.dtype.name, "dropout": rates[0] if rates else 0.0,
            "input_dropout": input_rate, "max_norm": net.max_norm, "output": net.output,
            "loss": net.loss}


def _resume_defaults(args, net):
    """Flags not given take the checkpoint's values; a flag given that differs is an error."""
    given = args.given
    for flag, value in _checkpoint_settings(net).items():
        if flag in given and getattr(args, flag) != value:
            def shown(v):
                return ",".join(map(str, v)) if isinstance(v, list) else v
            name = "--" + flag.replace("_", "-")
            raise CLIError(f"--resume {args.resume}: the checkpoint is a {net.architecture} "
                           f"network with {name} {shown(value)}; {name} "
                           f"{shown(getattr(args, flag))} asks for another")
        setattr(args, flag, value)
    config = net.train_config
    if "batch_size" not in given and config.get("batch_size"):
        args.batch_size = int(config["batch_size"])
    if not given & set(OPTIMIZER_FLAGS) and config.get("optimizer"):
        from .optimizers import from_config
        args.resume_optimizer = from_config(config["optimizer"], config["optimizer_config"])


def _fit_arguments(args):
    """The optimizer settings of fit, from the flags, a recipe or a checkpoint."""
    if getattr(args, "resume_optimizer", None) is not None:
        return {"optimizer": args.resume_optimizer}
    fit_args = {"lr": 0.1 if args.lr is None else args.lr, "momentum": args.momentum,
                "weight_decay": args.weight_decay}
    if args.recipe and not args.optimizer:
        fit_args = {k: v for k, v in args.recipe_fit.items() if k not in ("epochs", "batch_size")}
        if args.lr is not None:
            fit_args["optimizer"] = fit_args["optimizer"].with_lr(args.lr)
    if args.optimizer:
        from .optimizers import get
        optimizer = get(args.optimizer)
        if args.lr is not None:
            optimizer = optimizer.with_lr(args.lr)
        fit_args = {"optimizer": optimizer}
        if (args.momentum, args.weight_decay) != (0.9, 0.0):
            raise CLIError("--momentum and --weight-decay go with the default SGD; with "
                           "--optimizer they are that optimizer's defaults")
    return fit_args


def _save_model(net, path):
    """Save the trained model; if that fails, to a named fallback file, and say where."""
    try:
        net.save(path)
        return path, None
    except OSError as exc:
        import tempfile
        import time
        name = f"fastmlp-model-{time.strftime('%Y%m%d-%H%M%S')}.npz"
        for folder in (Path.cwd(), Path(tempfile.gettempdir())):
            try:
                net.save(folder / name)
                return folder / name, exc
            except OSError:
                continue
        raise CLIError(f"--out {path}: the model could not be saved ({exc}), nor to a "
                       f"fallback file in {Path.cwd()} or {tempfile.gettempdir()}") from None


def cmd_train(args):
    from . import training
    from .fit_config import FitConfig
    from .network import Network
    _check_train_args(args)
    resumed = None
    if args.resume:
        resumed = Network.load(args.resume, backend=args.backend)
        _resume_defaults(args, resumed)
    config = FitConfig(epochs=args.epochs, batch_size=args.batch_size, **_fit_arguments(args),
                       verbose=0 if args.quiet else 1, checkpoint=args.checkpoint,
                       resume=args.resume)
    name, splits = _load_data(args, args.validation_size, args.dtype)
    if len(splits) == 3:
        (X, y), val, (Xt, yt) = splits
        val_note = f"validation {len(val[1])} (carved from train)"
    else:
        (X, y), (Xt, yt) = splits
        val = (Xt, yt)
        val_note = "val_ columns measured on the test set"
    n_classes = int(max(y.max(), yt.max())) + 1
    sizes = [X.shape[1], *args.hidden, n_classes]
    layered = args.recipe and "layers" in args.recipe_network
    if layered:
        from .recipes import build
        recipe_net, _ = build(args.recipe, X.shape[1], n_classes, seed=args.seed,
                              init=args.init, dtype=args.dtype, backend=args.backend)
        sizes = list(recipe_net.sizes)
    if resumed is not None:
        net = resumed
        if layered and recipe_net._structure() != net._structure():
            raise CLIError(f"--resume {args.resume}: the checkpoint is a {net.architecture} "
                           f"network; --recipe {args.recipe} is a {recipe_net.architecture}")
        if net.n_features != X.shape[1] or net.n_classes < n_classes:
            raise CLIError(f"--resume {args.resume}: the checkpoint is a {net.architecture} "
                           f"network; {name} has {X.shape[1]} features and {n_classes} classes")
    elif layered:
        net = recipe_net
    else:
        net = Network(sizes, activation=args.activation, init=args.init, dtype=args.dtype,
                      backend=args.backend, seed=args.seed, dropout=args.dropout,
                      input_dropout=args.input_dropout, max_norm=args.max_norm,
                      output=args.output, loss=args.loss)
    if not args.quiet:
        print(f"Data: {name}: train {len(y)}, test {len(yt)}, {val_note}")
        net.summary()
    callbacks = [args.tensorboard_callback] if args.tensorboard else []
    log = _EpochLog(args.log) if args.log else None
    if log:
        callbacks.append(log)
    try:
        history = training.fit(net, X, y, config.replace(callbacks=callbacks),
                               validation_data=val)
    except TrainingDivergedError as exc:
        raise CLIError(f"training diverged: {exc}") from None
    finally:
        if log:
            log.close()
    net.train_config["dataset"] = name
    test = net.evaluate(Xt, yt)
    net.train_config.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
    print(f"Test loss: {test['loss']:.4f} - test accuracy: {test['accuracy']:.4f}", flush=True)
    status = 0
    if args.out:
        saved, error = _save_model(net, args.out)
        side = int(round(np.sqrt(net.n_features)))
        note = ("" if name != datasets.FALLBACK else
                f" (a model of the 8x8 digits: it takes {side}x{side} images, not MNIST's 28x28)")
        if error is not None:
            print(f"fastmlp train: error: could not save the model to {args.out} "
                  f"({' '.join(str(error).split())}); saved it to {saved} instead", file=sys.stderr)
            status = 1
        else:
            print(f"Saved model to {saved}" + note)
    if args.plot:
        from .plotting import plot_history
        plot_history(history, args.plot, title=f"{name}: {net.architecture}",
                     loss_name=net.loss, validation_label=None if len(splits) == 3 else "test")
        print(f"Saved learning curves to {args.plot}")
    if args.tensorboard:
        print(f"TensorBoard run: {callbacks[0].run_dir} (tensorboard --logdir "
              f"{args.tensorboard})")
    if history.stopped == "interrupted":
        return EXIT_INTERRUPTED
    return status


# ---- evaluate ---------------------------------------------------------------------------------
def cmd_evaluate(args):
    from .metrics import classification_report, confusion_matrix, format_confusion, format_report
    from .network import Network
    if args.plot_confusion or args.plot_errors:
        from .plotting import require_matplotlib
        require_matplotlib()
    net = Network.load(args.model, backend=args.backend)
    if args.dataset is None:
        args.dataset = net.train_config.get("dataset")
    name, (Xt, yt) = _load_data(args, 0, net.dtype.name, test_only=True)
    if Xt.shape[1] != net.n_features:
        raise CLIError(f"{args.model} takes {net.n_features} inputs but {name} has "
                       f"{Xt.shape[1]} features per sample")
    result = net.evaluate(Xt, yt)
    pred = net.predict(Xt)
    cm = confusion_matrix(yt, pred, net.n_classes)
    print(f"Model: {args.model} ({net.architecture}) - test set: {name}, {len(yt)} samples")
    print(f"Test loss: {result['loss']:.4f} - test accuracy: {result['accuracy']:.4f}\n")
    print(format_report(classification_report(yt, pred, net.n_classes)))
    print("\nConfusion matrix:")
    print(format_confusion(cm))
    if args.plot_confusion:
        from .plotting import plot_confusion
        plot_confusion(cm, args.plot_confusion)
        print(f"\nSaved confusion matrix to {args.plot_confusion}")
    if args.plot_errors:
        from .plotting import plot_errors
        plot_errors(Xt, yt, pred, args.plot_errors)
        print(f"Saved {int(np.count_nonzero(pred != yt))} errors (up to 36 shown) to "
              f"{args.plot_errors}")
    return 0


# ---- predict ----------------------------------------------------------------------------------
def cmd_predict(args):
    from .images import prepare, style_of
    from .network import Network
    net = Network.load(args.model, backend=args.backend)
    if args.top_k < 1:
        raise CLIError(f"--top-k must be >= 1, got {args.top_k}")
    k = min(args.top_k, net.n_classes)
    style = style_of(net)
    if style == "uci-digits":
        print(f"note: {args.model} was trained on the 8x8 UCI digits, not MNIST: each image is "
              f"reduced to 8x8 the way those digits were made (32x32 bitmap, 4x4 block counts)",
              file=sys.stderr)
    paths, inputs, failed = [], [], 0
    for path in args.images:  # one bad file is reported and the others still classified
        try:
            inputs.append(prepare(path, net.n_features, style))
            paths.append(path)
        except (FastMLPError, ValueError, OSError) as exc:
            failed += 1
            print(f"fastmlp predict: error: {' '.join(str(exc).split())}", file=sys.stderr)
    if inputs:
        proba = net.predict_proba(np.stack(inputs).astype(net.dtype))
        for path, p in zip(paths, proba):
            top = np.argsort(-p, kind="stable")[:k]
            ranked = ", ".join(f"{c} ({p[c]:.4f})" for c in top)
            print(f"{path}: {top[0]}   top-{k}: {ranked}")
    if failed:
        print(f"fastmlp predict: {failed} of {len(args.images)} images could not be classified",
              file=sys.stderr)
        return 1
    return 0


def _int_list(text, flag):
    try:
        values = []
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                lo, hi = part.split("-")
                values += list(range(int(lo), int(hi) + 1))
            else:
                values.append(int(part))
        return values
    except ValueError:
        raise CLIError(f"{flag} takes integers like 0-9 or 1,2,3, got {text!r}") from None


def cmd_sweep(args):
    from .sweep import plot, summarize, sweep, write_csv
    if args.plot:
        from .plotting import require_matplotlib
        require_matplotlib()
    grid = {"seed": _int_list(args.seeds, "--seeds")}
    grid["hidden"] = [(w,) for w in _int_list(args.hidden, "--hidden")]
    if args.train_sizes:
        grid["train_size"] = _int_list(args.train_sizes, "--train-sizes")
    if args.optimizers:
        grid["optimizer"] = args.optimizers.split(",")
    # the x axis: the last swept setting; every other setting that varies groups the records
    swept = [k for k in ("hidden", "train_size", "optimizer") if k in grid]
    varied = [k for k in swept if len(grid[k]) > 1]
    by = (varied or swept)[-1]
    group = tuple(k for k in varied if k != by)
    out = Path(args.out)
    log_path = out.with_suffix(".jsonl")
    records = sweep(grid, data=args.dataset or "mnist", base={"epochs": args.epochs,
                    "batch_size": args.batch_size}, backend=args.backend, n_jobs=args.jobs,
                    out=log_path, scheduler=args.scheduler, address=args.address,
                    data_dir=args.data_dir)
    if out.suffix.lower() == ".csv":
        write_csv(records, out)
    from .sweep import _label, _sort_key
    stats = summarize(records, by, group)
    for key in sorted(stats, key=lambda k: [_sort_key(v) for v in (k if group else (k,))]):
        mean, std, n = stats[key]
        values = key if group else (key,)
        setting = ", ".join(f"{k} {_label(v)}" for k, v in zip((*group, by), values))
        print(f"{setting}: test accuracy {100 * mean:.2f} % +- {100 * std:.2f} ({n} seeds)")
    print(f"Saved {len(records)} records to {out} (log: {log_path})")
    if args.plot:
        plot(records, by, args.plot, log_x=by in ("train_size", "hidden"), group=group,
             title=f"{args.dataset or 'mnist'}: test accuracy against {by}")
        print(f"Saved the plot to {args.plot}")
    return 0


def cmd_augment_preview(args):
    from .augment import Augment, preview
    from .plotting import require_matplotlib
    if not 1 <= args.count <= 64:
        raise CLIError(f"--count must be in [1, 64], got {args.count}")
    augment = Augment(args.shift, args.rotate, args.scale, args.elastic_alpha,
                      args.elastic_sigma, interpolation=args.interpolation)
    require_matplotlib()
    name, (Xt, _) = _load_data(args, 0, test_only=True)
    shape = (32, 32, 3) if name == "cifar10" else None
    if shape is None:
        side = int(round(np.sqrt(Xt.shape[1])))
        shape = (side, side, 1)
    preview(Xt, augment, shape, count=args.count, seed=args.seed, out=args.out)
    print(f"Saved {args.count} {name} test images and three distortions of each to {args.out}")
    return 0


def cmd_warmup(args):
    from .warmup import warm_up
    names = recipe_names() if args.all else (args.recipes or [])
    done = warm_up(names, args.dtype, progress=sys.stderr.isatty())
    if args.all:
        done += warm_up((), args.dtype, progress=sys.stderr.isatty())
    for label, seconds in done:
        print(f"{label}: {seconds:.1f} s")
    print(f"Compiled {len(done)} configurations in {sum(s for _, s in done):.1f} s; later fits "
          f"and predictions of these networks load them from the disk cache")
    return 0


def cmd_recipes(args):
    from .recipes import get
    for name in recipe_names():
        print(f"{name:<18}{get(name)['about']}")
    return 0


def _apply_recipe(parser, argv):
    """Parse argv once to find --recipe, make the recipe's settings the defaults of train, and
    parse again: flags given explicitly win."""
    args = parser.parse_args(argv)
    if getattr(args, "recipe", None) is None:
        return args
    from .recipes import get
    recipe = get(args.recipe)
    net, fit = recipe["network"], recipe["fit"]
    defaults = {"epochs": fit["epochs"], "batch_size": fit["batch_size"]}
    defaults.update({k: v for k, v in net.items() if k not in ("layers", "input_shape")})
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.choices["train"].set_defaults(**defaults)
    args = parser.parse_args(argv)
    args.recipe_fit, args.recipe_network = fit, net
    return args


def cmd_bench(args):
    harness = bench_harness()
    if harness is None:
        raise CLIError(BENCH_MISSING)
    return harness.main(args)


def cmd_export(args):
    from .network import Network
    from .serialization import load_arrays
    _check_output_path(args.out, "the output")
    kind = load_arrays(args.model)[1].get("kind")
    if kind == "estimator":
        from .sklearn import FastMLPClassifier
        if args.flat_input:
            raise CLIError("--flat-input is for image networks; an estimator takes flat rows")
        model = FastMLPClassifier.load(args.model)
        model.to_onnx(args.out, opset=args.opset)
        what = f"FastMLPClassifier ({model.net_.architecture}; outputs label, probabilities)"
    else:
        net = Network.load(args.model)
        net.to_onnx(args.out, opset=args.opset, flat_input=args.flat_input)
        what = f"{net.architecture} (outputs probabilities, logits)"
    print(f"Wrote {args.out}: {what}")
    return 0


def cmd_serve(args):
    from .serve import serve
    if not 0 < args.port < 65536:
        raise CLIError(f"--port must be in [1, 65535], got {args.port}")
    if not Path(args.model).is_file():
        raise CLIError(f"{args.model}: no such model file")
    serve(args.model, args.host, args.port, log=lambda m: print(m, flush=True))
    return 0


COMMANDS = {"serve": cmd_serve, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "export": cmd_export, "recipes": cmd_recipes, "sweep": cmd_sweep, "bench": cmd_bench,
            "augment-preview": cmd_augment_preview, "warmup": cmd_warmup}


def _given_flags(argv):
    """The dests of the flags written on the command line (neither defaults nor a recipe's)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for p in sub.choices.values():
        for action in p._actions:
            action.default = argparse.SUPPRESS
        p._defaults.clear()
    return set(vars(parser.parse_args(argv))) - {"command"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"] and bench_harness() is None:  # before its flags are parsed
        print(f"fastmlp bench: error: {BENCH_MISSING}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = _apply_recipe(parser, argv)
    args.given = _given_flags(argv)
    try:
        return COMMANDS[args.command](args)
    except (CLIError, FastMLPError, ValueError, TypeError, OSError, ImportError) as exc:
        if os.environ.get("FASTMLP_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"fastmlp {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastmlp {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
