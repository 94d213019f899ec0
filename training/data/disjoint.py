"""Whether held-out photos share a file or a scene with the training photos (docs/holdout.md).

A file is shared when two sha256 digests are equal. A scene is shared when one photo shows a part of the
other: a copy, re-encoded or rescaled, or a crop of 40% to 100% of its short side, anywhere in it.
Correlating whole thumbnails misses crops, and so does correlating a fixed grid of crops of both photos:
a crop seldom lands on the grid (on the real sets, random crops of 40-90% scored a median of 0.84 against
their source that way, down to 0.47, while unrelated pairs reached 0.96). So one photo is searched for in
the other, both ways:

1. coarse: the centred square of one photo (all of it, and its central half) as a 16x16 grey thumbnail
   against every 16x16 window of the other at 19 scales 5% apart; the 3 best scales are kept;
2. fine: each kept placement scoring at least COARSE_MIN is re-scored at 48x48, within 3 pixels and 2.5%
   of scale around it, then (from FINE_MIN) to a quarter of a pixel.

Thumbnails are blurred by one of their pixels (a fraction of a pixel off barely matters). A score is the
normalised correlation of two thumbnails less their best-fitting quadratic surface (two smooth skies, or
two vignettes, do not match), times SSIM's contrast and luminance terms (a faint window does not match a
textured one). A pair scoring at least THRESHOLD shares a scene: see docs/holdout.md for the scores of
true crops and of unrelated photos that set it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageFilter

BASE = 256  # photos are compared at this short side (never enlarged)
COARSE, FINE = 16, 48  # thumbnail sides of the two stages
SCALE_STEP, N_SCALES = 1.05, 19  # coarse scales 1 down to 1.05**-18 = 0.42 of the short side
FRACTIONS = (1.0, 0.5)  # centred squares searched for: the whole short side and its central half
PROPOSALS = 3  # best coarse scales refined per pair, direction and fraction
COARSE_MIN, FINE_MIN = 0.7, 0.85  # what to refine: true crops scored >= 0.81 coarse, >= 0.9 whole-pixel
RADIUS = 3  # fine search radius in 48x48-thumbnail pixels
BLUR = 1.0  # Gaussian radius, in thumbnail pixels
MIN_STD = 2.0  # thumbnails flatter than this (grey levels) match nothing
THRESHOLD = 0.95
PARAMETERS = {
    "base_short_side": BASE,
    "coarse": COARSE,
    "fine": FINE,
    "scales": [round(SCALE_STEP**-k, 4) for k in range(N_SCALES)],
    "fractions": list(FRACTIONS),
    "proposals": PROPOSALS,
    "coarse_min": COARSE_MIN,
    "fine_min": FINE_MIN,
    "radius": RADIUS,
    "blur": BLUR,
    "min_std": MIN_STD,
    "threshold": THRESHOLD,
}
Box = tuple[float, float, float, float]  # left, top, right, bottom


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_grey(path: Path | io.BytesIO) -> Image.Image:
    """The photo in grey, box-downscaled to a short side of BASE."""
    with Image.open(path) as im:
        im.draft("L", (2 * BASE, 2 * BASE))  # JPEGs decode at reduced size
        im = im.convert("L")
    f = BASE / min(im.size)
    return im if f >= 1 else im.resize((round(im.width * f), round(im.height * f)), Image.Resampling.BOX)


@dataclass(frozen=True)
class Thumbs:
    """Thumbnails less their best quadratic surface, as unit vectors (0 when flat), with grey std and mean."""

    unit: np.ndarray
    std: np.ndarray
    mean: np.ndarray

    @classmethod
    def of(cls, pixels: np.ndarray) -> Thumbs:
        """From rows of k*k grey pixels."""
        k = math.isqrt(pixels.shape[1])
        residual = pixels - (pixels @ _surfaces(k)) @ _surfaces(k).T
        std = np.sqrt(np.einsum("ij,ij->i", residual, residual)) / k
        residual /= np.maximum(std * k, 1e-9)[:, None]
        residual[std <= MIN_STD] = 0
        return cls(residual, std, pixels.mean(1))

    @classmethod
    def concat(cls, parts: list[Thumbs]) -> Thumbs:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("unit", "std", "mean")))

    def row(self, i: int) -> Thumbs:
        return Thumbs(self.unit[i : i + 1], self.std[i : i + 1], self.mean[i : i + 1])


@functools.cache
def _surfaces(k: int) -> np.ndarray:
    """Orthonormal basis of the quadratic surfaces in x and y over a k x k thumbnail."""
    y, x = np.mgrid[0:k, 0:k].reshape(2, -1) / k - 0.5
    return np.linalg.qr(np.stack([np.ones(k * k), x, y, x * x, x * y, y * y], 1))[0].astype(np.float32)


def similarity(a: Thumbs, b: Thumbs) -> np.ndarray:
    """Every row of a against every row of b: correlation x SSIM contrast x SSIM luminance (1 = same)."""
    contrast = 2 * np.outer(a.std, b.std) / (a.std[:, None] ** 2 + b.std[None] ** 2 + 1e-9)
    luminance = (2 * np.outer(a.mean, b.mean) + 1) / (a.mean[:, None] ** 2 + b.mean[None] ** 2 + 1)
    return (a.unit @ b.unit.T) * contrast * luminance


def _centre(im: Image.Image, fraction: float) -> Box:
    side = fraction * min(im.size)
    x, y = (im.width - side) / 2, (im.height - side) / 2
    return (x, y, x + side, y + side)


def _pixels(im: Image.Image, size: tuple[int, int], box: Box | None = None) -> np.ndarray:
    """The box of im at size pixels, blurred by one of them: a fraction of a pixel off barely matters."""
    resized = im.resize(size, Image.Resampling.BOX, box=box)
    return np.asarray(resized.filter(ImageFilter.GaussianBlur(BLUR)), np.float32)


def _render(im: Image.Image, box: Box, size: int) -> np.ndarray:
    return _pixels(im, (size, size), box).reshape(1, -1)


def _templates(im: Image.Image, size: int) -> Thumbs:
    return Thumbs.of(np.concatenate([_render(im, _centre(im, f), size) for f in FRACTIONS]))


def _proposals(outer: Image.Image, templates: Thumbs) -> list[list[tuple[float, tuple[float, float, float]]]]:
    """Per template: its PROPOSALS best coarse scales in outer, as (score, (x, y, side)) in outer's pixels."""
    best = []  # per scale: the best window's score and corner for each template, and the windows' side
    for k in range(N_SCALES):
        f = COARSE / SCALE_STEP**-k / min(outer.size)
        w, h = max(COARSE, round(outer.width * f)), max(COARSE, round(outer.height * f))
        grid = _pixels(outer, (w, h))
        windows = sliding_window_view(grid, (COARSE, COARSE))
        s = similarity(Thumbs.of(windows.reshape(-1, COARSE * COARSE)), templates)
        wy, wx = np.divmod(s.argmax(0), windows.shape[1])
        corners = np.stack([wx * outer.width / w, wy * outer.height / h], 1)
        best.append((s.max(0), corners, COARSE * outer.width / w))
    scores = np.stack([b[0] for b in best])  # scales x templates
    return [
        [(float(scores[k, t]), (*best[k][1][t], best[k][2])) for k in np.argsort(-scores[:, t])[:PROPOSALS]]
        for t in range(scores.shape[1])
    ]


def _refine(template: Thumbs, outer: Image.Image, box: tuple[float, float, float]) -> float:
    """The best fine score around a coarse placement: whole pixels over 5 scales, then sub-pixel steps."""
    x, y, side = box
    score, cx, cy, sd = -1.0, x + side / 2, y + side / 2, side
    for k in range(-2, 3):
        s = side * SCALE_STEP ** (k / 4)
        g = FINE / s  # thumbnail pixels per photo pixel
        margin = (RADIUS + 0.5) / g
        x0, y0 = max(0.0, cx - s / 2 - margin), max(0.0, cy - s / 2 - margin)
        w = int((min(outer.width, cx + s / 2 + margin) - x0) * g)
        h = int((min(outer.height, cy + s / 2 + margin) - y0) * g)
        if min(w, h) < FINE:
            continue
        grid = _pixels(outer, (w, h), (x0, y0, x0 + w / g, y0 + h / g))
        windows = sliding_window_view(grid, (FINE, FINE))
        scores = similarity(Thumbs.of(windows.reshape(-1, FINE * FINE)), template)[:, 0]
        i = int(scores.argmax())
        if scores[i] > score:
            wy, wx = divmod(i, windows.shape[1])
            score, cx, cy, sd = float(scores[i]), x0 + (wx + FINE / 2) / g, y0 + (wy + FINE / 2) / g, s
    if score < FINE_MIN:
        return score
    step, scale = 0.5, SCALE_STEP ** (1 / 8)  # half a thumbnail pixel, 0.6% of scale, then halved twice
    for _ in range(3):
        centre = (cx, cy, sd)
        for dx, dy, ds in itertools.product((-1, 0, 1), repeat=3):
            c = (centre[0] + dx * step * centre[2] / FINE, centre[1] + dy * step * centre[2] / FINE)
            s = centre[2] * scale**ds
            b = (c[0] - s / 2, c[1] - s / 2, c[0] + s / 2, c[1] + s / 2)
            if b[0] >= 0 and b[1] >= 0 and b[2] <= outer.width and b[3] <= outer.height:
                v = float(similarity(Thumbs.of(_render(outer, b, FINE)), template)[0, 0])
                if v > score:
                    score, cx, cy, sd = v, c[0], c[1], s
        step, scale = step / 2, scale**0.5
    return score


def scene_scores(photos: list[Image.Image], others: list[Image.Image]) -> np.ndarray:
    """photos x others: how much of a scene each pair shares (>= THRESHOLD: one shows a part of the other).

    Pairs whose coarse placements all stay below COARSE_MIN keep their best coarse score."""
    n = len(FRACTIONS)
    found = defaultdict(list)  # (photo, other) -> [(coarse score, inner image, fraction, outer image, box)]
    templates = Thumbs.concat([_templates(im, COARSE) for im in photos])
    for j, outer in enumerate(others):
        for t, proposals in enumerate(_proposals(outer, templates)):
            found[t // n, j] += [(s, ("photo", t // n), t % n, outer, box) for s, box in proposals]
    templates = Thumbs.concat([_templates(im, COARSE) for im in others])
    for i, outer in enumerate(photos):
        for t, proposals in enumerate(_proposals(outer, templates)):
            found[i, t // n] += [(s, ("other", t // n), t % n, outer, box) for s, box in proposals]
    fine = {}  # (side, index) -> fine templates of that image
    scores = np.zeros((len(photos), len(others)))
    for (i, j), candidates in found.items():
        scores[i, j] = max(c[0] for c in candidates)
        refined = []
        for s, inner, fraction, outer, box in candidates:
            if s >= COARSE_MIN:
                if inner not in fine:
                    fine[inner] = _templates((photos if inner[0] == "photo" else others)[inner[1]], FINE)
                refined.append(_refine(fine[inner].row(fraction), outer, box))
        if refined:
            scores[i, j] = max(refined)
    return scores


def crop_copy(im: Image.Image) -> Image.Image:
    """A 60% off-centre crop of im, shrunk by 0.8 and saved as a JPEG: what the scene check must catch."""
    w, h = im.size
    crop = im.crop((round(0.1 * w), round(0.3 * h), round(0.7 * w), round(0.9 * h)))
    crop = crop.resize((round(crop.width * 0.8), round(crop.height * 0.8)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=85)
    return load_grey(buf)


def check_disjoint(
    photos: dict[str, Path],
    others: dict[str, Path],
    photo_sources: dict[str, str] | None = None,
    other_sources: dict[str, str] | None = None,
) -> dict:
    """Files and scenes that photos (name -> file) share with others; *_sources: name -> source sha256.

    Also scores each photo against a crop_copy of itself ('calibration'): a check that cannot find those
    finds nothing. The set is disjoint when 'shared_files' and 'shared_scenes' are empty and every
    calibration score reaches THRESHOLD ('ok')."""
    start = time.monotonic()
    digests = defaultdict(set)  # sha256 -> names on each side
    for side, files, sources in (("photo", photos, photo_sources), ("other", others, other_sources)):
        for name, path in files.items():
            digests[file_sha256(path)].add((side, name))
        for name, digest in (sources or {}).items():
            digests[digest].add((side, name))
    shared_files = sorted(
        [p, o]
        for names in digests.values()
        for p in sorted(n for s, n in names if s == "photo")
        for o in sorted(n for s, n in names if s == "other")
    )
    grey = {name: load_grey(path) for name, path in photos.items()}
    other_names = list(others)
    scores = scene_scores(list(grey.values()), [load_grey(others[n]) for n in other_names])
    calibration = {name: float(scene_scores([crop_copy(im)], [im])[0, 0]) for name, im in grey.items()}
    closest = {p: (other_names[int(r.argmax())], float(r.max())) for p, r in zip(grey, scores, strict=True)}
    shared_scenes = [
        [p, other_names[j], round(float(scores[i, j]), 4)]
        for i, p in enumerate(grey)
        for j in np.flatnonzero(scores[i] >= THRESHOLD)
    ]
    worst_crop = min(calibration, key=calibration.get)
    top = max(closest, key=lambda p: closest[p][1])
    return {
        "ok": not shared_files and not shared_scenes and calibration[worst_crop] >= THRESHOLD,
        "parameters": PARAMETERS,
        "photos": len(photos),
        "others": len(others),
        "source_digests": {"photos": len(photo_sources or {}), "others": len(other_sources or {})},
        "shared_files": shared_files,
        "shared_scenes": shared_scenes,
        "max_cross_score": {"photo": top, "other": closest[top][0], "score": round(closest[top][1], 4)},
        "calibration_min": {"photo": worst_crop, "score": round(calibration[worst_crop], 4)},
        "closest": {p: [o, round(s, 4)] for p, (o, s) in sorted(closest.items(), key=lambda kv: -kv[1][1])},
        "calibration": {p: round(s, 4) for p, s in sorted(calibration.items())},
        "seconds": round(time.monotonic() - start, 1),
    }
