// The drawing page of `fastmlp serve`: pointer strokes on a canvas (mouse, touch, pen), sent
// to /api/predict as a PNG at most ten times a second while drawing, and once when a stroke ends.
"use strict";
const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const seen = document.getElementById("seen");
const state = { drawing: false, last: null, timer: null, lastSent: 0, inFlight: false,
                pending: false, empty: true };
const INTERVAL = 100;  // ms between predictions while drawing

function clearPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  state.empty = true;
  document.getElementById("label").textContent = "–";
  document.getElementById("top3").innerHTML = "";
  document.getElementById("time").textContent = "";
  seen.getContext("2d").clearRect(0, 0, seen.width, seen.height);
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * pad.width / box.width,
           y: (event.clientY - box.top) * pad.height / box.height };
}

function stroke(from, to) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = 18;  // a marker on a 280-pixel pad: MNIST's stroke width at 28x28
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x, to.y);
  ctx.stroke();
  state.empty = false;
}

pad.addEventListener("pointerdown", (event) => {
  pad.setPointerCapture(event.pointerId);
  state.drawing = true;
  state.last = point(event);
  stroke(state.last, state.last);
  schedule();
});
pad.addEventListener("pointermove", (event) => {
  if (!state.drawing) return;
  const p = point(event);
  stroke(state.last, p);
  state.last = p;
  schedule();
});
for (const name of ["pointerup", "pointercancel", "pointerleave"]) {
  pad.addEventListener(name, () => {
    if (!state.drawing) return;
    state.drawing = false;
    schedule(true);
  });
}

function schedule(now) {
  if (state.empty) return;
  const wait = now ? 0 : Math.max(0, INTERVAL - (Date.now() - state.lastSent));
  clearTimeout(state.timer);
  state.timer = setTimeout(send, wait);
}

function send() {
  if (state.inFlight) { state.pending = true; return; }
  state.inFlight = true;
  state.lastSent = Date.now();
  pad.toBlob((blob) => post(blob, "image/png"), "image/png");
}

function post(body, type) {
  fetch("/api/predict", { method: "POST", headers: { "Content-Type": type }, body })
    .then((r) => r.json().then((answer) => ({ ok: r.ok, answer })))
    .then(({ ok, answer }) => {
      if (!ok) throw new Error(answer.error || "the server refused the image");
      show(answer);
    })
    .catch((error) => { document.getElementById("time").textContent = error.message; })
    .finally(() => {
      state.inFlight = false;
      if (state.pending) { state.pending = false; send(); }
    });
}

function show(answer) {
  document.getElementById("label").textContent = answer.label;
  const list = document.getElementById("top3");
  list.innerHTML = "";
  for (const { label, probability } of answer.top3) {
    const item = document.createElement("li");
    item.innerHTML = `<span class="digit"></span><span class="bar"></span>` +
                     `<span class="value"></span>`;
    item.querySelector(".digit").textContent = label;
    item.querySelector(".bar").style.width = `${Math.round(probability * 160)}px`;
    item.querySelector(".value").textContent = `${(probability * 100).toFixed(1)} %`;
    list.appendChild(item);
  }
  document.getElementById("time").textContent =
    `${answer.milliseconds.toFixed(2)} ms on the server`;
  drawSeen(answer.image);
}

function drawSeen(image) {
  const side = image.length;
  const small = new ImageData(side, side);
  for (let i = 0; i < side; i++) {
    for (let j = 0; j < side; j++) {
      const v = Math.round(image[i][j] * 255);
      const k = 4 * (i * side + j);
      small.data[k] = small.data[k + 1] = small.data[k + 2] = v;
      small.data[k + 3] = 255;
    }
  }
  const tmp = document.createElement("canvas");
  tmp.width = tmp.height = side;
  tmp.getContext("2d").putImageData(small, 0, 0);
  const c = seen.getContext("2d");
  c.imageSmoothingEnabled = false;
  c.drawImage(tmp, 0, 0, seen.width, seen.height);
}

document.getElementById("clear").addEventListener("click", clearPad);
document.getElementById("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const image = new Image();
  image.onload = () => {
    clearPad();
    const scale = Math.min(pad.width / image.width, pad.height / image.height);
    const w = image.width * scale, h = image.height * scale;
    ctx.drawImage(image, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    state.empty = false;
    URL.revokeObjectURL(image.src);
  };
  image.src = URL.createObjectURL(file);
  post(file, file.type || "image/png");
  event.target.value = "";
});

fetch("/api/model").then((r) => r.json()).then((model) => {
  const accuracy = model.test_accuracy == null ? "no stored test accuracy"
    : `test accuracy ${(model.test_accuracy * 100).toFixed(2)} %` +
      (model.dataset ? ` on ${model.dataset}` : "");
  document.getElementById("model").textContent =
    `${model.architecture}, ${accuracy}; inputs ${model.input_side}x${model.input_side} ` +
    `(${model.preprocessing} preprocessing)`;
  document.getElementById("summary").textContent = model.summary;
});
clearPad();
