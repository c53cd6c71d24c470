"""Load on ``fastmlp serve``: a real Uvicorn on localhost, ``--clients`` threads posting drawn
MNIST test digits (PNG, 224x224) to /api/predict, ``--requests`` in all. Reports requests per
second, the client's latency (median, p99) and the server's own milliseconds per prediction
(decode, preprocessing, predict), and checks every answer.

    FASTMLP_DATA=../shared/data/mnist python bench/serve_load.py [--model model.npz]
        [--clients 4] [--requests 2000] [--json out.json]
"""
import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import fastmlp  # noqa: F401  (first: it sets OpenBLAS up before NumPy loads)
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import machine  # noqa: E402


def drawn(digit):
    dark = (255 - digit.reshape(28, 28) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.kron(dark, np.ones((8, 8), np.uint8))).save(buffer, format="PNG")
    return buffer.getvalue()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a model file (default: 784-300-10, "
                                                      "3 epochs on MNIST)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from fastmlp import Network, load_mnist
    (X, y), (Xt, yt) = load_mnist(download=False)
    folder = tempfile.mkdtemp()
    model = args.model
    if model is None:
        net = Network([784, 300, 10], seed=0)
        net.fit(X, y, epochs=3, batch_size=64, verbose=0)
        model = os.path.join(folder, "model.npz")
        net.save(model)
    bodies = [drawn(d) for d in Xt[:100]]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "fastmlp", "serve", model, "--port",
                               str(port)], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api/predict"
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model", timeout=1)
                break
            except OSError:
                time.sleep(0.2)

        def post(body):
            request = urllib.request.Request(url, data=body,
                                             headers={"Content-Type": "image/png"})
            with urllib.request.urlopen(request) as response:
                return json.loads(response.read())

        expected = [post(b)["label"] for b in bodies]
        latencies, server_ms, wrong = [], [], []

        def client(k):
            for i in range(k, args.requests, args.clients):
                t0 = time.perf_counter()
                answer = post(bodies[i % 100])
                latencies.append(time.perf_counter() - t0)
                server_ms.append(answer["milliseconds"])
                if answer["label"] != expected[i % 100]:
                    wrong.append(i)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait()
    latencies.sort()
    result = {"machine": machine(), "clients": args.clients, "requests": args.requests,
              "requests_per_second": args.requests / seconds,
              "latency_median_ms": statistics.median(latencies) * 1e3,
              "latency_p99_ms": latencies[int(0.99 * len(latencies))] * 1e3,
              "server_ms_median": statistics.median(server_ms), "wrong": len(wrong)}
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
