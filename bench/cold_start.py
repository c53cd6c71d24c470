"""Cold start: what a new user waits for, in fresh processes with an empty JIT cache.

For each configuration, a new Python process with an empty ``NUMBA_CACHE_DIR`` times
``import fastmlp``, the first ``fit`` (one epoch on a small slice of MNIST: nearly all of it is
compiling) and the first ``predict``; then a second process on the same (now warm) cache does
the same. A first process also starts with an empty user cache, as on a new machine (where a
fit at a batch size above 16 long enough to repay it times the first layer's two paths,
compiling both; these short fits take BLAS's path without timing). Configurations: 784-300-10 with SGD, 784-300-10 with Adam and dropout, and the ``cnn``
recipe's network with its optimizer.

    FASTMLP_DATA=../shared/data/mnist python bench/cold_start.py [--json out.json] [--only NAME]

The machine's CPU, Numba's version and threading layer are printed beside the numbers. The
processes run one after another (never two timings at once).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CONFIGS = {
    "mlp-sgd": "Network([784, 300, 10], seed=0), dict(lr=0.1, momentum=0.9), 256, 2000",
    "mlp-adam-dropout": "Network([784, 300, 10], dropout=0.5, seed=0), dict(optimizer='adam'), "
                        "128, 2000",
    "cnn": "build('cnn', 784, 10, seed=0)[0], {k: v for k, v in build('cnn', 784, 10, seed=0)[1]"
           ".items() if k not in ('epochs', 'batch_size')}, 128, 512",
}

CHILD = """
import json, os, sys, time
t0 = time.perf_counter()
import fastmlp
t_import = time.perf_counter() - t0
from fastmlp import Network, load_mnist
from fastmlp.recipes import build
(X, y), (Xt, yt) = load_mnist(os.environ["FASTMLP_DATA"], download=False)
net, fit, batch, n = {config}
t0 = time.perf_counter()
history = net.fit(X[:n], y[:n], epochs=1, batch_size=batch, verbose=0, **fit)
t_fit = time.perf_counter() - t0
t0 = time.perf_counter()
net.predict(Xt[:100])
t_predict = time.perf_counter() - t0
print(json.dumps({{"import": t_import, "first_fit": t_fit, "first_predict": t_predict,
                  "compile_time": history.params.get("compile_time")}}))
"""


def machine():
    import numba
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from fastmlp._cpu import cpu_flags
    vendor, flags = cpu_flags()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE/other"
    return {"cpu": model, "vendor": vendor, "isa": isa, "numba": numba.__version__,
            "python": sys.version.split()[0]}


def run_child(config, cache_dir, user_cache=None):
    """One fresh process on the Numba cache ``cache_dir``; ``user_cache``: an XDG cache folder
    in place of the user's (a new machine's: no first-layer path timed and recorded yet)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    if user_cache is not None:
        env["XDG_CACHE_HOME"] = user_cache
    proc = subprocess.run([sys.executable, "-c", CHILD.format(config=config)], env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"cold_start: the child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--only", choices=sorted(CONFIGS), action="append",
                        help="run only this configuration (repeatable)")
    args = parser.parse_args()
    if not os.environ.get("FASTMLP_DATA"):
        raise SystemExit("cold_start: set FASTMLP_DATA to the folder of the MNIST IDX files")
    info = machine()
    print(f"CPU: {info['cpu']} ({info['isa']}); numba {info['numba']}, Python {info['python']}")
    results = {"machine": info, "date": time.strftime("%Y-%m-%d"), "runs": {}}
    print(f"{'configuration':<18}{'cache':<7}{'import':>8}{'first fit':>11}{'compile':>9}"
          f"{'first predict':>15}")
    for name in args.only or CONFIGS:
        # "new": empty Numba cache and user cache (nothing recorded of the first layer's paths:
        # a long fit would time both, compiling the code of both); "cold": empty Numba cache,
        # the machine's records kept; "warm": the cold run's Numba cache
        with tempfile.TemporaryDirectory(prefix="fastmlp-new-") as new_cache, \
                tempfile.TemporaryDirectory(prefix="fastmlp-new-user-") as new_user, \
                tempfile.TemporaryDirectory(prefix="fastmlp-cold-") as cache:
            for state, numba_cache, user_cache in (("new", new_cache, new_user),
                                                   ("cold", cache, None), ("warm", cache, None)):
                r = run_child(CONFIGS[name], numba_cache, user_cache)
                results["runs"][f"{name}/{state}"] = r
                compile_time = r.get("compile_time")
                shown = "-" if compile_time is None else f"{compile_time:.2f}"
                print(f"{name:<18}{state:<7}{r['import']:>8.2f}{r['first_fit']:>11.2f}"
                      f"{shown:>9}{r['first_predict']:>15.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
