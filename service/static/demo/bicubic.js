// Worker: decode the picked file and enlarge it with bicubic interpolation, off the page's thread.
//
// A canvas's own smoothing ("imageSmoothingQuality") is whatever the browser picks, so the comparison
// would not be honest; this is the textbook filter, computed the way Pillow's Image.resize(BICUBIC)
// computes it (the service's tests check the two agree to within 1 level):
//   * Keys' cubic kernel with a = -0.5, two taps on each side (enlarging only: outscale >= 1);
//   * output pixel x samples the source at (x + 0.5) * in / out, pixel centres aligned;
//   * near the borders the taps that fall outside are dropped and the rest renormalised;
//   * rows first, rounded to 8 bits, then columns.
// Each channel (alpha too) is interpolated on its own, as the service treats its input.
// Message in: {file, scale} or {file, width, height}. Out: {blob, width, height, inWidth, inHeight}.
"use strict";

function keys(x) {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return a * (((x - 5) * x + 8) * x - 4);
  return 0;
}

// For each output index: the first source index it reads and its (normalised) weights.
function taps(inSize, outSize) {
  const step = inSize / outSize;
  const first = new Int32Array(outSize);
  const weights = [];
  for (let i = 0; i < outSize; i++) {
    const centre = (i + 0.5) * step;
    const lo = Math.max(0, Math.floor(centre - 1.5));
    const hi = Math.min(inSize, Math.floor(centre + 2.5));
    const w = new Float64Array(hi - lo);
    let sum = 0;
    for (let j = lo; j < hi; j++) sum += w[j - lo] = keys(j + 0.5 - centre);
    for (let j = 0; j < w.length; j++) w[j] /= sum;
    first[i] = lo;
    weights.push(w);
  }
  return { first, weights };
}

// RGBA bytes (inW x inH) -> RGBA bytes (outW x outH).
function enlarge(src, inW, inH, outW, outH) {
  const across = taps(inW, outW);
  const rows = new Uint8ClampedArray(inH * outW * 4); // (inH, outW, 4) after the horizontal pass
  for (let y = 0; y < inH; y++) {
    const srcRow = y * inW * 4;
    const dstRow = y * outW * 4;
    for (let x = 0; x < outW; x++) {
      const w = across.weights[x];
      const base = srcRow + across.first[x] * 4;
      for (let c = 0; c < 4; c++) {
        let acc = 0;
        for (let k = 0; k < w.length; k++) acc += w[k] * src[base + k * 4 + c];
        rows[dstRow + x * 4 + c] = Math.floor(acc + 0.5); // the clamped array clips to 0..255
      }
    }
  }
  const down = taps(inH, outH);
  const out = new Uint8ClampedArray(outH * outW * 4);
  const rowLength = outW * 4;
  const acc = new Float64Array(rowLength);
  for (let y = 0; y < outH; y++) {
    const w = down.weights[y];
    acc.fill(0);
    for (let k = 0; k < w.length; k++) {
      const from = (down.first[y] + k) * rowLength;
      const wk = w[k];
      for (let i = 0; i < rowLength; i++) acc[i] += wk * rows[from + i];
    }
    const to = y * rowLength;
    for (let i = 0; i < rowLength; i++) out[to + i] = Math.floor(acc[i] + 0.5);
  }
  return out;
}

// Python's round(): halves go to the even neighbour. The service sizes the result with
// max(1, round(side * outscale)); the same rounding here gives the same size.
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const rest = x - floor;
  if (rest !== 0.5) return Math.round(x);
  return floor % 2 === 0 ? floor : floor + 1;
}

self.onmessage = async (event) => {
  const { file, scale, width, height } = event.data;
  try {
    // EXIF orientation is applied, as the service does; alpha stays unpremultiplied.
    const bitmap = await createImageBitmap(file, { premultiplyAlpha: "none" });
    const inW = bitmap.width;
    const inH = bitmap.height;
    const outW = width ?? Math.max(1, roundHalfEven(inW * scale));
    const outH = height ?? Math.max(1, roundHalfEven(inH * scale));
    const source = new OffscreenCanvas(inW, inH).getContext("2d");
    source.drawImage(bitmap, 0, 0);
    const pixels = enlarge(source.getImageData(0, 0, inW, inH).data, inW, inH, outW, outH);
    const target = new OffscreenCanvas(outW, outH);
    target.getContext("2d").putImageData(new ImageData(pixels, outW, outH), 0, 0);
    const blob = await target.convertToBlob({ type: "image/png" });
    self.postMessage({ blob, width: outW, height: outH, inWidth: inW, inHeight: inH });
  } catch (e) {
    self.postMessage({ error: String(e.message || e) });
  }
};
