"""``fastmlp serve``: draw a digit in the browser and see what a trained network thinks of it.

A Starlette app (extra ``fastmlp[serve]``) with one page (``fastmlp/static/``: a canvas, no
build step, nothing from a CDN) and a JSON API beside it:

- ``GET /api/model``: the model's summary, input, stored test accuracy and preprocessing;
- ``POST /api/predict``: a PNG/JPEG body (``Content-Type: image/...``), a form upload (field
  ``file``) or JSON ``{"pixels": [[...], ...]}`` (28x28, or the model's square, in 0-1 or
  0-255); answers ``{"label", "probabilities", "top3", "milliseconds", "image"}``, ``image``
  being the square the network saw. Bodies over 1 MB get 413, what is not an image of a
  digit 400.

Images are prepared as ``fastmlp predict`` prepares them (``fastmlp.images``: transparent
pixels on white, then MNIST's cropping and centring, or the 8x8 digits' reduction). The model
is read once, at start; nothing from a request is written anywhere.
"""
import json
import time
from pathlib import Path

import numpy as np

from .errors import DataFormatError

MAX_BODY = 1 << 20
STATIC = Path(__file__).parent / "static"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _starlette():
    try:
        import starlette  # noqa: F401
    except ImportError:
        raise ImportError("fastmlp serve needs Starlette and Uvicorn: pip install "
                          "'fastmlp[serve]'") from None


class Predictor:
    """A loaded model and how its inputs are made; thread-safe (``predict_proba`` is)."""

    def __init__(self, net):
        from .images import square_side, style_of
        self.net, self.style = net, style_of(net)
        self.side = square_side(net.n_features)
        self.classes = [str(c) for c in range(net.n_classes)]
        net.predict_proba(np.zeros((1, net.n_features), net.dtype))  # compile or load, now

    def describe(self):
        net = self.net
        config = net.train_config
        return {"architecture": net.architecture, "summary": net.summary(print_fn=None),
                "input_side": self.side, "classes": self.classes, "preprocessing": self.style,
                "dataset": config.get("dataset"), "test_accuracy": config.get("test_accuracy"),
                "epochs": net.epochs_done}

    def predict(self, image):
        """The answer for a 2-D image in [0, 1]."""
        from .images import to_input
        t0 = time.perf_counter()
        x = to_input(image, self.net.n_features, self.style, "the image")
        p = self.net.predict_proba(x[None, :].astype(self.net.dtype))[0]
        top = np.argsort(-p, kind="stable")[:3]
        return {"label": self.classes[int(top[0])],
                "probabilities": [float(v) for v in p],
                "top3": [{"label": self.classes[int(c)], "probability": float(p[c])}
                         for c in top],
                "milliseconds": (time.perf_counter() - t0) * 1e3,
                "image": np.round(x.reshape(self.side, self.side), 4).tolist()}


async def _body(request):
    """The request's body, refused past MAX_BODY bytes (declared or sent)."""
    from starlette.exceptions import HTTPException
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(413, f"the body is over {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPException(413, f"the body is over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _image_of(content_type, body, side):
    """The 2-D image in a request body of ``content_type``; DataFormatError if there is none."""
    from .images import image_from_array, image_from_bytes
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            pixels = json.loads(body)["pixels"]
            arr = np.array(pixels, dtype=np.float64)
        except (ValueError, KeyError, TypeError) as exc:
            raise DataFormatError(f'expected JSON {{"pixels": [[...], ...]}} ({exc})') from None
        return image_from_array(arr, "pixels", side)
    if kind.startswith("image/"):
        return image_from_bytes(body, "the image")
    raise DataFormatError(f"Content-Type {kind or 'none'}: send image/png, image/jpeg, "
                          f"multipart/form-data with a file, or application/json")


def create_app(model):
    """The ASGI app serving ``model`` (a Network, or the path of a model file)."""
    _starlette()
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from .network import Network
    net = Network.load(model) if isinstance(model, (str, Path)) else model
    predictor = Predictor(net)

    async def page(request):
        return FileResponse(STATIC / "index.html")

    async def describe(request):
        return JSONResponse(predictor.describe())

    async def predict(request: Request):
        from starlette.concurrency import run_in_threadpool
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            declared = request.headers.get("content-length")
            if declared is None or not declared.isdigit() or int(declared) > MAX_BODY:
                raise HTTPException(413 if declared and declared.isdigit() else 411,
                                    f"send an upload of at most {MAX_BODY} bytes with its "
                                    f"Content-Length")
            form = await request.form(max_files=1, max_fields=4)
            upload = form.get("file")
            if upload is None or not hasattr(upload, "read"):
                raise HTTPException(400, "the form has no file field")
            body = await upload.read()
            content_type = upload.content_type or "image/png"
        else:
            body = await _body(request)
        try:
            image = _image_of(content_type, body, predictor.side)
            answer = await run_in_threadpool(predictor.predict, image)
        except DataFormatError as exc:
            raise HTTPException(400, str(exc)) from None
        return JSONResponse(answer)

    async def error(request, exc):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    routes = [Route("/", page), Route("/api/model", describe),
              Route("/api/predict", predict, methods=["POST"]),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    return Starlette(routes=routes, exception_handlers={HTTPException: error})


def serve(model, host="127.0.0.1", port=8000, log=print):
    """Run the app with Uvicorn until Ctrl-C."""
    _starlette()
    import uvicorn
    app = create_app(model)
    if host not in LOCAL_HOSTS:
        log(f"warning: serving on {host}: other machines can reach this page and its API")
    log(f"Serving {model} on http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
