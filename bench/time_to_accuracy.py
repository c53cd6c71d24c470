"""Wall-clock time to 99.0 % and 99.5 % MNIST test accuracy of the CNN recipes: fastmlp against
the same network and recipe in PyTorch (eager, CPU, the same number of threads), each framework
in a process of its own, one after the other (a benchmark, run by hand: minutes per run).

    python bench/time_to_accuracy.py --recipes cnn,cnn-bn-aug --seeds 0 \\
        --json bench/results/DATE-CPU-time-to-accuracy.json

Both train on the first 55,000 training images (the last 5,000 are the validation split the
recipes were chosen on; its accuracy is reported at the end). ``--until-reached`` stops a run
once every threshold is reached (for time to accuracy alone); without it each run trains the
recipe's epochs, and its final test accuracy is the recipe's result for that seed.

The same network: PyTorch's is built from the recipe's layer list (NCHW; its flatten made
channels-last) and starts from fastmlp's initial weights. The same recipe: Adam with the
recipe's learning rate and schedule, its batch size and epochs, the same sample order, and the
same distortions (drawn by ``Augment.apply``, which gives the images fit trains on at each
step). Time counts training only (fastmlp: the epoch times, compile excluded: it compiles
first on a few images; PyTorch: its epochs); test accuracy is checked at every epoch's end,
untimed. The test set only reports: nothing is chosen on it.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

THRESHOLDS = (0.99, 0.995)
VALIDATION_SIZE = 5000


def first_time_at(curve, threshold):
    """Training seconds at the first check whose test accuracy reaches ``threshold``."""
    return next((seconds for _, seconds, acc in curve if acc >= threshold), None)


def splits(data_dir):
    from fastmlp import load_mnist
    return load_mnist(data_dir, download=False, validation_size=VALIDATION_SIZE)


def fastmlp_run(recipe, seed, data_dir, epochs=None, until_reached=False):
    from fastmlp import recipes
    (X, y), validation, (Xt, yt) = splits(data_dir)
    net, fit = recipes.build(recipe, seed=seed)
    if epochs:
        fit["epochs"] = epochs
    warm, _ = recipes.build(recipe, seed=seed)  # compile (or load the cache), untimed
    warm.fit(X[:256], y[:256], **dict(fit, epochs=1, verbose=0, lr_schedule=None))
    curve, total = [], [0.0]

    def check(epoch, metrics):  # (epoch counts from 1)
        total[0] += metrics["epoch_time"]
        curve.append((epoch, round(total[0], 2), net.evaluate(Xt, yt)["accuracy"]))
        print(f"fastmlp {recipe} epoch {epoch}: {total[0]:.1f} s, test {curve[-1][2]:.4f}",
              file=sys.stderr, flush=True)
        check.stop_training = until_reached and curve[-1][2] >= max(THRESHOLDS)

    net.fit(X, y, verbose=0, callbacks=[check], **fit)
    return curve, net.evaluate(*validation)["accuracy"]


def torch_network(torch, net):
    """The fastmlp network ``net`` as a PyTorch module, with its weights."""
    nn = torch.nn

    class ChannelsLastFlatten(nn.Module):  # as fastmlp's: (h, w, c) rows
        def forward(self, x):
            return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)

    modules, shape = [], net.input_shape
    params = dict(zip(net._param_layers, zip(net.weights, net.biases)))
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    for l, layer in enumerate(net.layers):
        W, b = params.get(l, (None, None))
        if layer.kind == "conv2d":
            kh, kw = layer.kernel_size
            conv = nn.Conv2d(shape[2], layer.filters, (kh, kw), stride=layer.strides[0],
                             padding="same" if layer.padding == "same" else 0)
            conv.weight.data = torch.tensor(np.ascontiguousarray(W.transpose(3, 2, 0, 1)))
            conv.bias.data = torch.tensor(b.copy())
            modules.append(conv)
        elif layer.kind == "dense":
            dense = nn.Linear(W.shape[0], W.shape[1])
            dense.weight.data, dense.bias.data = torch.tensor(W.T.copy()), torch.tensor(b.copy())
            modules.append(dense)
        elif layer.kind == "batchnorm":
            module = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
            bn = module(W.shape[1], eps=layer.epsilon, momentum=1 - layer.momentum)
            bn.weight.data, bn.bias.data = torch.tensor(W[0].copy()), torch.tensor(b.copy())
            modules.append(bn)
        elif layer.kind == "maxpool2d":
            modules.append(nn.MaxPool2d(layer.pool_size, layer.strides))
        elif layer.kind == "flatten":
            modules.append(ChannelsLastFlatten())
        elif layer.kind == "dropout":
            modules.append(nn.Dropout(layer.rate))
        if getattr(layer, "activation", None):
            modules.append(acts[layer.activation]())
        shape = net._shapes[l]
    return nn.Sequential(*modules)


def torch_run(recipe, seed, data_dir, epochs=None, until_reached=False):
    import torch
    from fastmlp import recipes
    from fastmlp.augment import image_shape_of
    torch.manual_seed(seed)
    (X, y), (Xv, yv), (Xt, yt) = splits(data_dir)
    net, fit = recipes.build(recipe, seed=seed)
    epochs = epochs or fit["epochs"]
    model = torch_network(torch, net)
    opt = fit["optimizer"]
    adam = torch.optim.Adam(model.parameters(), lr=opt.lr, betas=(opt.beta1, opt.beta2),
                            eps=opt.eps)
    schedule, augment = fit.get("lr_schedule"), fit.get("augment")
    shape, B = image_shape_of(net), fit["batch_size"]
    def accuracy(X, y):
        model.eval()
        with torch.no_grad():
            images = torch.from_numpy(X.reshape(-1, *shape)).permute(0, 3, 1, 2)
            return float((model(images).argmax(1).numpy() == y).mean())

    labels = torch.from_numpy(y.astype(np.int64))
    curve, total = [], 0.0
    for epoch in range(epochs):
        lr = schedule.value(epoch, opt.lr, None) if schedule else opt.lr
        for group in adam.param_groups:
            group["lr"] = lr
        order = net.epoch_order(epoch, len(y))
        model.train()
        t0 = time.perf_counter()
        for step, start in enumerate(range(0, len(y), B)):
            rows = order[start:start + B]
            xb = X[rows]
            if augment is not None:
                xb = augment.apply(xb, shape, seed=net.seed, epoch=epoch, step=step)
            xb = torch.from_numpy(np.ascontiguousarray(xb).reshape(-1, *shape)).permute(0, 3, 1, 2)
            adam.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(xb), labels[rows])
            loss.backward()
            adam.step()
        total += time.perf_counter() - t0
        curve.append((epoch + 1, round(total, 2), accuracy(Xt, yt)))
        print(f"torch {recipe} epoch {epoch + 1}: {total:.1f} s, test {curve[-1][2]:.4f}",
              file=sys.stderr, flush=True)
        if until_reached and curve[-1][2] >= max(THRESHOLDS):
            break
    return curve, accuracy(Xv, yv)


def worker(framework, recipe, seed, data_dir, epochs, until_reached):
    run = fastmlp_run if framework == "fastmlp" else torch_run
    curve, validation = run(recipe, seed, data_dir, epochs, until_reached)
    return {"framework": framework, "recipe": recipe, "seed": seed, "curve": curve,
            "final_accuracy": curve[-1][2], "validation_accuracy": validation,
            "seconds_to": {str(t): first_time_at(curve, t) for t in THRESHOLDS}}


def versions(threads):
    import numba
    import torch
    from fastmlp import __version__
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from harness import blas_libraries, isa, machine, threading_layer
    torch.set_num_threads(threads)
    return {"machine": machine(), "isa": isa(), "blas": blas_libraries(),
            "numba": f"{numba.__version__} ({threading_layer()})",
            "torch": f"{torch.__version__} ({torch.get_num_threads()} threads)",
            "fastmlp": __version__}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default="cnn,cnn-bn-aug")
    p.add_argument("--frameworks", default="fastmlp,torch")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=None, help="fewer than the recipe's")
    p.add_argument("--until-reached", action="store_true",
                   help="stop a run once every threshold is reached")
    p.add_argument("--data-dir", default=os.environ.get("FASTMLP_DATA"))
    p.add_argument("--json", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    threads = os.cpu_count()
    if args.worker:  # in a process of its own
        import torch
        torch.set_num_threads(threads)
        framework, recipe = args.worker.split(":")
        print(json.dumps(worker(framework, recipe, int(args.seeds), args.data_dir, args.epochs,
                                args.until_reached)))
        return
    results = {"versions": versions(threads), "runs": []}
    for recipe, seed, framework in ((r, int(s), f) for r in args.recipes.split(",")
                                    for s in args.seeds.split(",")
                                    for f in args.frameworks.split(",")):
        cmd = [sys.executable, __file__, "--worker", f"{framework}:{recipe}", "--seeds", str(seed)]
        cmd += ["--epochs", str(args.epochs)] if args.epochs else []
        cmd += ["--until-reached"] if args.until_reached else []
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if proc.returncode:
            raise SystemExit(f"{framework} {recipe} seed {seed} failed ({proc.returncode})")
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        results["runs"].append(run)
        print(f"{recipe} seed {seed} {framework}: test {run['final_accuracy']:.4f} after "
              f"{run['curve'][-1][0]} epochs, validation {run['validation_accuracy']:.4f}; "
              + ", ".join(f"to {float(t):.1%}: " + (f"{s:.0f} s" if s is not None
                                                    else "not reached")
                          for t, s in run["seconds_to"].items()), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
    for recipe in args.recipes.split(","):
        runs = [r for r in results["runs"] if r["recipe"] == recipe]
        for framework in args.frameworks.split(","):
            final = [r["final_accuracy"] for r in runs if r["framework"] == framework]
            print(f"{recipe} {framework}: mean test accuracy {np.mean(final):.4f} over "
                  f"{len(final)} seeds")
        for t in map(str, THRESHOLDS):
            pairs = [(a["seconds_to"][t], b["seconds_to"][t]) for a in runs for b in runs
                     if a["seed"] == b["seed"] and (a["framework"], b["framework"])
                     == ("fastmlp", "torch")]
            for ours, theirs in pairs:
                if ours and theirs:
                    print(f"{recipe}: time to {float(t):.1%}, fastmlp / PyTorch = "
                          f"{ours / theirs:.2f} ({ours:.0f} s / {theirs:.0f} s)")


if __name__ == "__main__":
    main()
