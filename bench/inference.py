"""Inference speed beside ONNX Runtime: images per second of ``predict_proba`` and of the same
model exported to ONNX and run by ONNX Runtime (CPU provider, its default threads), at batch 1,
64 and 10,000 on the 10,000 MNIST (or Fashion-MNIST) test images, and the latency of one image (median and p99
over 10,000 calls). Each (runner, model) pair runs in a process of its own, float32; the
networks have their initial weights (inference costs the same whatever the weights).

    FASTMLP_DATA=../shared/data/mnist python bench/inference.py [--models mlp,deep,cnn]
        [--json results.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import fastmlp  # noqa: F401  (first: it sets OpenBLAS up before NumPy loads)
import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
from harness import gemm_rates, machine  # noqa: E402

MODELS = {"mlp": "784-300-10", "deep": "784-1024-1024-10", "cnn": "the 'cnn' recipe"}
BATCHES = (1, 64, 10000)
MIN_SECONDS = 1.0  # each throughput figure: whole passes over the images for at least this long


def network(model):
    from fastmlp import Network, recipes
    if model == "cnn":
        return recipes.build("cnn", seed=0)[0]
    sizes = [784, 300, 10] if model == "mlp" else [784, 1024, 1024, 10]
    return Network(sizes, seed=0)


def test_images(dataset, data_dir=None):
    from fastmlp import load_fashion_mnist, load_mnist
    load = load_fashion_mnist if dataset == "fashion-mnist" else load_mnist
    _, (X, _) = load(data_dir, download=False)
    return np.ascontiguousarray(X, np.float32)


def child(runner, model, onnx_path, dataset, data_dir):
    """In a process of its own: throughput per batch size and one image's latency."""
    X = test_images(dataset, data_dir)
    if runner == "fastmlp":
        net = network(model)
        predict = net.predict_proba
    else:
        import onnxruntime as ort
        session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        if model == "cnn":
            X = X.reshape(-1, 28, 28, 1)

        def predict(batch):
            return session.run(["probabilities"], {"input": batch})[0]
    predict(X[:64])  # compile or load the cache, warm the caches
    out = {"throughput": {}}
    for batch in BATCHES:
        batches = [X[i:i + batch] for i in range(0, len(X), batch)]
        images, t0 = 0, time.perf_counter()
        while True:
            for b in batches:
                predict(b)
            images += len(X)
            seconds = time.perf_counter() - t0
            if seconds >= MIN_SECONDS:
                break
        out["throughput"][str(batch)] = images / seconds
    latencies = []
    for i in range(len(X)):
        t0 = time.perf_counter()
        predict(X[i:i + 1])
        latencies.append(time.perf_counter() - t0)
    latencies.sort()
    out["latency_median_us"] = statistics.median(latencies) * 1e6
    out["latency_p99_us"] = latencies[int(0.99 * len(latencies))] * 1e6
    return out


def run(models, dataset="mnist", data_dir=None):
    import onnxruntime
    rates = gemm_rates()
    results = {"machine": machine(), "onnxruntime": onnxruntime.__version__,
               "fastmlp": fastmlp.__version__, "dataset": dataset,
               "gemm_gflops": {k: v / 1e9 for k, v in rates.items()}, "models": {}}
    print(f"{results['machine']['cpu']}, {results['machine']['cores']} cores, "
          f"{results['machine']['isa']}; BLAS: {'; '.join(results['machine']['blas'])}; "
          f"Numba threading layer: {results['machine']['threading_layer']}; "
          f"ONNX Runtime {onnxruntime.__version__}; {dataset}; best fp32 GEMM "
          f"{max(rates.values()) / 1e9:.0f} GFLOP/s", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for model in models:
            path = os.path.join(folder, f"{model}.onnx")
            network(model).to_onnx(path)
            # the floor: the forward pass's FLOPs at the best GEMM rate of this run
            net = network(model)
            forward_flops = 2 * sum(layer.macs(shape) for layer, shape
                                    in zip(net.layers, net._in_shapes))
            row = {"floor_images_per_s": max(rates.values()) / forward_flops}
            for runner in ("fastmlp", "onnxruntime"):
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", runner, model, path, dataset,
                     data_dir or ""], capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"{runner} {model} failed:\n{proc.stderr[-2000:]}")
                row[runner] = json.loads(proc.stdout.strip().splitlines()[-1])
            results["models"][model] = row
            print(format_row(model, row), flush=True)
    return results


def format_row(model, row):
    f, o = row["fastmlp"], row["onnxruntime"]
    lines = [f"\n{MODELS[model]}: images/s (fastmlp / ONNX Runtime = ratio; floor "
             f"{row['floor_images_per_s']:,.0f} images/s)"]
    for batch in BATCHES:
        a, b = f["throughput"][str(batch)], o["throughput"][str(batch)]
        lines.append(f"  batch {batch:>5}: {a:>12,.0f} / {b:>12,.0f} = {a / b:.2f}")
    lines.append(f"  one image, median: {f['latency_median_us']:.1f} us / "
                 f"{o['latency_median_us']:.1f} us = {f['latency_median_us'] / o['latency_median_us']:.2f}"
                 f"; p99: {f['latency_p99_us']:.1f} / {o['latency_p99_us']:.1f} us")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        runner, model, path, dataset, data_dir = sys.argv[2:7]
        print(json.dumps(child(runner, model, path, dataset, data_dir or None)))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,deep,cnn",
                        help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist",
                        help="the test images (fashion-mnist: dense inputs)")
    parser.add_argument("--data-dir", default=None, help="folder with the data set's IDX files")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    result = run(args.models.split(","), args.dataset, args.data_dir)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
