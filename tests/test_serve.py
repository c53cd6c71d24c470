"""``fastmlp serve``: the JSON API through Starlette's test client, and the page in a real
headless Chromium driven by Playwright against a real Uvicorn, drawing digits with the mouse."""
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from fastmlp import Network
from fastmlp.serve import MAX_BODY, STATIC, create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_REQUIRED = os.environ.get("FASTMLP_BROWSER_TESTS") == "required"  # set by .ci/run


def png(image, mode="L"):
    buffer = io.BytesIO()
    Image.fromarray(image, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def drawing(digit):
    """An MNIST test digit as a person's drawing: dark on white, 8x larger."""
    dark = (255 - digit.reshape(28, 28) * 255).astype(np.uint8)
    return np.kron(dark, np.ones((8, 8), np.uint8))


@pytest.fixture(scope="module")
def model_file(mnist, tmp_path_factory):
    (X, y), (Xt, yt) = mnist
    net = Network([784, 128, 10], seed=0)
    net.fit(X[:20000], y[:20000], epochs=3, batch_size=64, verbose=0)
    net.train_config.update(dataset="mnist", test_accuracy=net.evaluate(Xt, yt)["accuracy"])
    path = tmp_path_factory.mktemp("serve") / "model.npz"
    net.save(path)
    return path


@pytest.fixture(scope="module")
def client(model_file):
    return TestClient(create_app(model_file))


@pytest.mark.mnist
def test_drawings_are_read_as_their_digits(client, mnist):
    _, (Xt, yt) = mnist
    right = 0
    for digit, label in zip(Xt[:40], yt[:40]):
        r = client.post("/api/predict", content=png(drawing(digit)),
                        headers={"Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert set(answer) == {"label", "probabilities", "top3", "milliseconds", "image"}
        assert np.array(answer["image"]).shape == (28, 28)
        assert sum(answer["probabilities"]) == pytest.approx(1, abs=1e-4)
        assert [t["label"] for t in answer["top3"]][0] == answer["label"]
        right += answer["label"] == str(label)
    assert right >= 36


@pytest.mark.mnist
def test_transparent_uploads_json_pixels_and_forms_agree(client, mnist):
    _, (Xt, yt) = mnist
    digit = Xt[0]  # a 7
    rgba = np.zeros((224, 224, 4), np.uint8)  # black strokes on a transparent background
    rgba[..., 3] = np.kron((digit.reshape(28, 28) * 255).astype(np.uint8), np.ones((8, 8),
                                                                                   np.uint8))
    answers = [
        client.post("/api/predict", content=png(rgba, "RGBA"),
                    headers={"Content-Type": "image/png"}),
        client.post("/api/predict", json={"pixels": digit.reshape(28, 28).tolist()}),
        client.post("/api/predict", json={"pixels": (digit * 255).tolist()}),  # flat, 0-255
        client.post("/api/predict", files={"file": ("seven.png", png(drawing(digit)),
                                                    "image/png")}),
    ]
    for r in answers:
        assert r.status_code == 200, r.text
        assert r.json()["label"] == str(yt[0])


@pytest.mark.mnist
def test_bad_requests_are_refused_with_a_reason(client):
    cases = [
        (dict(content=b"\x89PNG" + b"0" * MAX_BODY, headers={"Content-Type": "image/png"}),
         413, "over"),
        (dict(content=b"hello", headers={"Content-Type": "text/plain"}), 400, "Content-Type"),
        (dict(content=b"not a picture", headers={"Content-Type": "image/png"}), 400,
         "not a readable image"),
        (dict(json={"pixels": np.zeros((27, 28)).tolist()}), 400, "shape (27, 28)"),
        (dict(json={"pixels": "seven"}), 400, "could not convert"),
        (dict(json={"image": []}), 400, "pixels"),
        (dict(json={"pixels": np.zeros((28, 28)).tolist()}), 400, "blank"),
        (dict(files={"other": ("x.txt", b"x", "text/plain")}), 400, "no file"),
    ]
    for kwargs, status, reason in cases:
        r = client.post("/api/predict", **kwargs)
        assert r.status_code == status, (kwargs.get("headers"), r.text)
        assert reason in r.json()["error"]
    assert client.get("/api/predict").status_code == 405


@pytest.mark.mnist
def test_the_model_and_the_page_are_served_offline(client):
    model = client.get("/api/model").json()
    assert model["architecture"] == "784-128-10 MLP (relu)"
    assert model["input_side"] == 28 and model["preprocessing"] == "mnist"
    assert 0.9 < model["test_accuracy"] <= 1 and model["dataset"] == "mnist"
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="pad"' in page.text
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
        assert client.get(f"/static/{name}").status_code == 200


@pytest.mark.mnist
def test_concurrent_requests_are_each_answered_right(model_file, mnist):
    _, (Xt, yt) = mnist
    bodies = [png(drawing(d)) for d in Xt[:25]]
    app = create_app(model_file)
    expected = [TestClient(app).post("/api/predict", content=b,
                                     headers={"Content-Type": "image/png"}).json()["label"]
                for b in bodies]
    wrong, done = [], []

    def worker(k):
        with TestClient(app) as local:
            for i in range(k, 200, 8):
                r = local.post("/api/predict", content=bodies[i % 25],
                               headers={"Content-Type": "image/png"})
                done.append(i)
                if r.status_code != 200 or r.json()["label"] != expected[i % 25]:
                    wrong.append(i)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    assert len(done) == 200 and not wrong


def test_the_8x8_fallback_model_gets_its_own_preprocessing(tmp_path):
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    net = Network([64, 32, 10], seed=0)
    net.fit(X / 16, y, epochs=20, batch_size=32, verbose=0)
    net.train_config["dataset"] = "digits"  # what fastmlp train records for them
    client = TestClient(create_app(net))
    assert client.get("/api/model").json()["preprocessing"] == "uci-digits"
    big = np.kron((255 - X[0].reshape(8, 8) * 16).clip(0, 255).astype(np.uint8),
                  np.ones((32, 32), np.uint8))
    r = client.post("/api/predict", content=png(big), headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and np.array(r.json()["image"]).shape == (8, 8)


def test_serve_binds_this_machine_unless_told_and_warns_then(monkeypatch):
    import uvicorn

    from fastmlp import serve as serve_module
    calls, lines = [], []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    net = Network([4, 3], seed=0)
    serve_module.serve(net, log=lines.append)
    serve_module.serve(net, host="0.0.0.0", port=9000, log=lines.append)
    assert calls[0]["host"] == "127.0.0.1" and calls[1]["host"] == "0.0.0.0"
    assert not any("warning" in m for m in lines[:1]) and "warning" in lines[1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(model_file):
    """(process, port) of a real `fastmlp serve` on a free port, once it answers."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "fastmlp", "serve", str(model_file),
                               "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.time() < deadline, "the server did not start"
                time.sleep(0.2)
        yield server, port
    finally:
        server.terminate()
        server.wait(timeout=30)


def _stroke(page, box, points):
    """A mouse stroke through points given on the 280x280 pad."""
    page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        for t in np.linspace(0, 1, 12)[1:]:
            page.mouse.move(box["x"] + x0 + t * (x1 - x0), box["y"] + y0 + t * (y1 - y0))
    page.mouse.up()


@pytest.mark.mnist
@pytest.mark.skipif(CHROMIUM is None and not BROWSER_REQUIRED,
                    reason="no Chromium on this machine (.ci/run installs Debian's)")
def test_a_person_draws_a_seven_and_a_one_in_chromium(model_file, tmp_path):
    assert CHROMIUM is not None, "Chromium is required here: apt-get install chromium"
    from playwright.sync_api import sync_playwright
    with running_server(model_file) as (server, port):
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 900, "height": 640})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('model').textContent"
                                   ".includes('test accuracy')")
            box = page.locator("#pad").bounding_box()
            seen = {}
            for name, strokes in (("7", [[(70, 60), (210, 60), (120, 230)]]),
                                  ("1", [[(140, 40), (140, 240)]])):
                page.click("#clear")
                for points in strokes:
                    _stroke(page, box, points)
                page.wait_for_function("document.getElementById('label').textContent !== '–'"
                                       " && document.getElementById('time').textContent "
                                       ".includes('ms')")
                time.sleep(0.5)  # the last stroke's answer
                seen[name] = page.inner_text("#label")
                page.screenshot(path=str(tmp_path / f"draw-{name}.png"))
            browser.close()
        shot = os.environ.get("FASTMLP_SERVE_SCREENSHOT")  # for the docs' picture
        if shot:
            shutil.copy(tmp_path / "draw-7.png", shot)
        assert seen == {"7": "7", "1": "1"}


@pytest.mark.mnist
def test_an_image_network_is_served_too(mnist):
    from fastmlp.recipes import build
    _, (Xt, _) = mnist
    net = build("cnn", seed=0)[0]
    client = TestClient(create_app(net))
    assert client.get("/api/model").json()["architecture"].startswith("28x28x1 > Conv2D")
    r = client.post("/api/predict", content=png(drawing(Xt[0])),
                    headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and len(r.json()["probabilities"]) == 10


def _rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


@pytest.mark.mnist
def test_a_loaded_server_answers_every_request_and_stays_flat(model_file, mnist):
    """#43: 5,120 requests from 16 clients at once, valid and invalid mixed, oversized bodies and
    slow uploads among them, against a real Uvicorn: every valid request answered right, every
    invalid one a 4xx, the process alive, its memory flat."""
    import http.client
    _, (Xt, _) = mnist
    with running_server(model_file) as (server, port):
        valid = [png(drawing(d)) for d in Xt[:20]]

        def post(body, content_type, slow=False):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            if slow:  # a trickle of 4 KB pieces
                connection.putrequest("POST", "/api/predict")
                connection.putheader("Content-Type", content_type)
                connection.putheader("Content-Length", str(len(body)))
                connection.endheaders()
                for i in range(0, len(body), 4096):
                    connection.send(body[i:i + 4096])
                    time.sleep(0.002)
            else:
                connection.request("POST", "/api/predict", body,
                                   {"Content-Type": content_type})
            response = connection.getresponse()
            answer = response.status, json.loads(response.read() or b"{}")
            connection.close()
            return answer

        expected = [post(b, "image/png")[1]["label"] for b in valid]
        rss_before = _rss_kb(server.pid)
        bad = {"oversized": (b"\x89PNG" + bytes(MAX_BODY), "image/png", 413),
               "garbage": (b"\x00" * 500, "image/png", 400),
               "text": (b"seven", "text/plain", 400),
               "shape": (json.dumps({"pixels": [[0.5] * 5] * 3}).encode(), "application/json",
                         400)}
        failures = []

        def client(k):
            for i in range(320):
                kind = (k + i) % 8
                try:
                    if kind < 4:  # valid, one in four of them uploaded slowly
                        status, answer = post(valid[(k + i) % 20], "image/png", slow=kind == 3)
                        if status != 200 or answer["label"] != expected[(k + i) % 20]:
                            failures.append((k, i, status))
                    else:
                        body, content_type, want = list(bad.values())[kind - 4]
                        status, _ = post(body, content_type)
                        if status != want:
                            failures.append((k, i, status, want))
                except OSError as exc:
                    failures.append((k, i, repr(exc)))

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(client, range(16)))
        assert not failures[:5]
        assert server.poll() is None
        assert _rss_kb(server.pid) - rss_before < 60_000  # kB: no growth with the requests
