// The demo page: send the picked image to /v1/upscale and compare the result with the input enlarged by
// bicubic interpolation (computed in bicubic.js, a worker, while the server works).
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("form");
const fileInput = $("file");
const drop = $("drop");
const submit = $("submit");
const progress = $("progress");
const statusLine = $("status");
const errorBox = $("error");
const result = $("result");
const figure = $("figure");
const viewport = $("viewport");
const before = $("before");
const after = $("after");
const slider = $("slider");
const actual = $("actual");
const download = $("download");

let chosen = null; // the File to upscale
let busy = false;
let objectUrls = []; // blob: URLs of the last result, revoked when the next one starts

async function loadConfig() {
  try {
    const response = await fetch("/demo/config");
    const config = await response.json();
    $("key-field").hidden = !config.api_key_required;
    $("limits").textContent =
      `Up to ${(config.max_input_pixels / 1e6).toFixed(2)} megapixels and ` +
      `${(config.max_upload_bytes / 2 ** 20).toFixed(0)} MiB.`;
  } catch {
    $("key-field").hidden = false; // cannot tell: offer the field, the API will say if it is needed
  }
}

function choose(file) {
  if (!file) return;
  chosen = file;
  $("picked").textContent = `${file.name || "pasted image"} (${formatBytes(file.size)})`;
  submit.disabled = busy;
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 2 ** 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 2 ** 20).toFixed(1)} MiB`;
}

function formatSeconds(s) {
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`;
}

// ---- Sending the request: XMLHttpRequest, because fetch reports no upload progress. ----

function upscaleRequest(file, params, key, onPhase) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/v1/upscale?${params}`);
    xhr.responseType = "blob";
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.upload.onprogress = (e) => onPhase("Uploading", e.lengthComputable ? e.loaded / e.total : null);
    xhr.upload.onload = () => onPhase("Upscaling on the server", null);
    xhr.onprogress = (e) => {
      if (e.loaded > 0) onPhase("Downloading", e.lengthComputable ? e.loaded / e.total : null);
    };
    xhr.onload = () => resolve({ status: xhr.status, body: xhr.response, xhr });
    xhr.onerror = () => resolve({ status: 0, body: null, xhr });
    const body = new FormData();
    body.append("image", file, file.name || "image");
    xhr.send(body);
  });
}

async function showError(response) {
  let title = response.status ? `The API answered ${response.status}:` : "The request failed:";
  let message = response.status ? "" : "no answer from the server (network error).";
  if (response.body) {
    const text = await response.body.text();
    try {
      const { error } = JSON.parse(text);
      title = `The API answered ${response.status} (${error.type}):`;
      message = error.message;
    } catch {
      message = text; // not the API's JSON (a proxy's page, say): shown as it came
    }
  }
  showMessage(title, message);
}

function showMessage(title, message) {
  $("error-title").textContent = title;
  $("error-message").textContent = message;
  errorBox.hidden = false;
}

// ---- The bicubic "before" image, made in a worker at the result's size. ----

function bicubic(file, size) {
  const worker = new Worker("/static/demo/bicubic.js");
  const done = new Promise((resolve, reject) => {
    worker.onmessage = (e) => (e.data.error ? reject(new Error(e.data.error)) : resolve(e.data));
    worker.onerror = (e) => reject(new Error(e.message || "the bicubic worker failed"));
  }).finally(() => worker.terminate());
  worker.postMessage({ file, ...size });
  return done;
}

// ---- The comparison slider. ----

function setPosition(percent) {
  const p = Math.min(100, Math.max(0, percent));
  figure.style.setProperty("--pos", `${p}%`);
  slider.value = String(p);
  slider.setAttribute("aria-valuetext", `${Math.round(p)}%: bicubic on the left, model on the right`);
}

function positionFromPointer(event) {
  const box = figure.getBoundingClientRect();
  setPosition((100 * (event.clientX - box.left)) / box.width);
}

figure.addEventListener("pointerdown", (event) => {
  if (event.pointerType === "touch" && actual.checked) return; // 1:1 view: touch pans the image
  figure.setPointerCapture(event.pointerId);
  positionFromPointer(event);
});
figure.addEventListener("pointermove", (event) => {
  if (figure.hasPointerCapture(event.pointerId)) positionFromPointer(event);
});
slider.addEventListener("input", () => setPosition(Number(slider.value)));

function showActualPixels() {
  viewport.classList.toggle("actual", actual.checked);
  figure.style.setProperty("--actual-width", `${after.naturalWidth / window.devicePixelRatio}px`);
}
actual.addEventListener("change", showActualPixels);

// ---- One run: request and bicubic in parallel, then the comparison. ----

async function run() {
  if (!chosen || busy) return;
  busy = true;
  submit.disabled = true;
  errorBox.hidden = true;
  result.hidden = true;
  objectUrls.forEach((url) => URL.revokeObjectURL(url));
  objectUrls = [];

  const file = chosen;
  const format = $("format").value;
  const outscale = Number($("outscale").value || "4");
  const params = new URLSearchParams({ format, outscale: String(outscale) });
  const seed = $("seed").value.trim();
  if (seed !== "") params.set("seed", seed);

  const started = performance.now();
  let phase = "Uploading";
  const tick = () => {
    statusLine.textContent = `${phase}… ${formatSeconds((performance.now() - started) / 1000)}`;
  };
  tick();
  const timer = setInterval(tick, 100);
  progress.hidden = false;
  progress.value = 0;
  const onPhase = (name, fraction) => {
    phase = name;
    if (fraction === null) progress.removeAttribute("value"); // indeterminate while the server works
    else progress.value = fraction;
    tick();
  };

  const beforeImage = bicubic(file, { scale: outscale }).catch((e) => e);
  try {
    const response = await upscaleRequest(file, params, $("key").value.trim(), onPhase);
    if (response.status !== 200) {
      statusLine.textContent = "";
      await showError(response);
      return;
    }
    const seconds = (performance.now() - started) / 1000;
    const afterUrl = URL.createObjectURL(response.body);
    objectUrls.push(afterUrl);
    after.src = afterUrl;
    await after.decode();
    const width = after.naturalWidth;
    const height = after.naturalHeight;
    phase = "Drawing the bicubic comparison";
    tick();
    let enlarged = await beforeImage;
    if (!(enlarged instanceof Error) && (enlarged.width !== width || enlarged.height !== height)) {
      enlarged = await bicubic(file, { width, height }).catch((e) => e); // rounding differed: redo
    }
    if (!(enlarged instanceof Error)) {
      const beforeUrl = URL.createObjectURL(enlarged.blob);
      objectUrls.push(beforeUrl);
      before.src = beforeUrl;
      await before.decode();
    }
    showResult(response, file, format, outscale, seconds, enlarged, width, height);
    statusLine.textContent = `Done in ${formatSeconds(seconds)}.`;
  } catch (e) {
    statusLine.textContent = "";
    showMessage("The result could not be shown:", e.message);
  } finally {
    clearInterval(timer);
    progress.hidden = true;
    busy = false;
    submit.disabled = !chosen;
  }
}

function showResult(response, file, format, outscale, seconds, enlarged, width, height) {
  figure.style.setProperty("--ratio", String(width / height));
  figure.style.setProperty("--natural-width", `${width}px`);
  const noBefore = enlarged instanceof Error;
  $("no-before").hidden = !noBefore;
  figure.classList.toggle("alone", noBefore);
  if (noBefore) {
    before.removeAttribute("src");
    $("no-before").textContent =
      `This browser could not decode the input (${enlarged.message}), so there is no bicubic ` +
      "comparison: the model's result is shown alone.";
    setPosition(0);
  } else {
    setPosition(slider.disabled ? 50 : Number(slider.value)); // back from a result shown alone
  }
  slider.disabled = noBefore;
  const extension = { png: "png", jpeg: "jpg", webp: "webp" }[format];
  const stem = (file.name || "image").replace(/\.[^.]*$/, "");
  download.href = after.src;
  download.download = `${stem}_x${outscale}.${extension}`;

  const server = (response.xhr.getResponseHeader("Server-Timing") || "")
    .split(",")
    .map((part) => part.trim().match(/^(\w+);dur=([\d.]+)$/))
    .filter(Boolean)
    .map(([, name, ms]) => `${name} ${formatSeconds(Number(ms) / 1000)}`)
    .join(", ");
  const seed = response.xhr.getResponseHeader("X-Seed");
  const input = enlarged instanceof Error ? "" : ` from ${enlarged.inWidth}×${enlarged.inHeight}`;
  $("timing").textContent =
    `${width}×${height}${input} in ${formatSeconds(seconds)}` +
    `${server ? ` (server: ${server})` : ""}. Seed ${seed}.`;
  result.hidden = false;
  showActualPixels();
}

// ---- Picking, dropping and pasting. ----

fileInput.addEventListener("change", () => choose(fileInput.files[0]));
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
}
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  choose(e.dataTransfer.files[0]);
});
// A file dropped beside the zone would make the browser navigate to it.
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => e.preventDefault());
window.addEventListener("paste", (e) => choose(e.clipboardData.files[0]));
form.addEventListener("submit", (e) => {
  e.preventDefault();
  run();
});

loadConfig();
