"""Build a small real-photo set (data/demo) from Debian/Ubuntu wallpaper packages.

    python scripts/demo_data.py [--out data/demo] [--short-side 1024] [--val-every 5]

The packages are fetched with `apt-get download` and unpacked with `dpkg -x` into a temporary folder: no
root, no install. Only the photographs are kept (the packages also ship vector and abstract art); they are
split into train/ and val/ by photo (sorted names, every `val_every`-th to val), and each package's
copyright file goes to COPYRIGHT/ (the photos are CC-BY / CC-BY-SA / CC0 / GPL: see those files, and
SOURCES.tsv for which package and file each photo comes from). Run it again and it does nothing.

Why downscale (default short side 1024): wallpapers are 2.5k-6k camera JPEGs, soft at the pixel level
(lens blur, demosaicing, shallow depth of field, JPEG), so a 256-pixel crop at full size is mostly a smooth
patch with little for x4 super-resolution to restore. An antialiased (Lanczos) downscale packs 2-4x more
scene into each crop, averages away the sources' JPEG blocks and sensor noise so the HR targets are clean,
brings the detail density near ImageNet's (~400 px photos, the paper's training data), and makes the
data loader decode 1.6 MP instead of 12 MP per crop. `--short-side 0` keeps the original files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

# Package -> {output name: path inside the package}. Photographs only, picked by looking at every image.
_PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
_PLASMA_PHOTOS = (
    "BytheWater ColdRipple ColorfulCups DarkestHour EveningGlow FallenLeaf "
    "Grey Kite OneStandsOut Path summer_1am"
)
_LOMIRI_16 = (
    "Bridge_by_Sander_Klootwijk Dragonfly_by_Bolly Picture_0B_by_freespace Picture_1A_by_freespace "
    "Wine_by_Jakkub_Mede aitzgorri_by_Aitzol_Berasategi free_by_Peter_Nerlich friends_by_Aitzol_Berasategi "
    "greentock_by_Peter_Nerlich life_by_Aitzol_Berasategi picosdeeuropa_by_Aitzol_Berasategi "
    "seeding_by_Clements_Engelhardt sunset_by_Aitzol_Berasategi umang_by_Abhishek_Mudgal"
)
_MATE_NATURE = (
    "Aqua Blinds Dune FreshFlower Garden GreenMeadow LadyBird RainDrops Storm TwoWings Wood YellowFlower"
)
SOURCES: dict[str, dict[str, str]] = {
    "mate-backgrounds": {n: f"usr/share/backgrounds/mate/nature/{n}.jpg" for n in _MATE_NATURE.split()},
    "lomiri-wallpapers-16.04": {n: f"usr/share/backgrounds/{n}.jpg" for n in _LOMIRI_16.split()},
    "lomiri-wallpapers-20.04": {
        "Kleiber_by_Lukas_Baubkus": "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"
    },
    "plasma-workspace-wallpapers": {n: _PLASMA.format(n) for n in _PLASMA_PHOTOS.split()},
}
STAMP = ".complete"


def fetch(packages: list[str], workdir: Path) -> dict[str, Path]:
    """apt-get download + dpkg -x each package; returns package -> unpacked root."""
    try:
        subprocess.run(["apt-get", "download", *packages], cwd=workdir, check=True)
    except (FileNotFoundError, subprocess.CalledProcessError) as e:
        sys.exit(
            f"apt-get download failed ({e}); this needs Debian/Ubuntu with package lists (apt-get update)"
        )
    roots = {}
    for pkg in packages:
        (deb,) = workdir.glob(f"{pkg}_*.deb")
        roots[pkg] = workdir / pkg
        subprocess.run(["dpkg", "-x", str(deb), str(roots[pkg])], check=True)
    return roots


def save_photo(src: Path, dst_stem: Path, short_side: int) -> Path:
    """Copy src (short_side 0) or write it Lanczos-downscaled to that short side as lossless PNG."""
    if short_side <= 0:
        dst = dst_stem.with_suffix(src.suffix.lower())
        shutil.copyfile(src, dst)
        return dst
    with Image.open(src) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
    w, h = im.size
    f = short_side / min(w, h)
    if f < 1:
        im = im.resize((round(w * f), round(h * f)), Image.Resampling.LANCZOS)
    dst = dst_stem.with_suffix(".png")
    im.save(dst, format="PNG")
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/demo"))
    ap.add_argument(
        "--short-side", type=int, default=1024, help="downscale to this short side; 0 keeps originals"
    )
    ap.add_argument("--val-every", type=int, default=5, help="every n-th photo (sorted by name) goes to val")
    args = ap.parse_args()

    settings = {"sources": SOURCES, "short_side": args.short_side, "val_every": args.val_every}
    stamp = args.out / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        n_train, n_val = (len(list((args.out / s).iterdir())) for s in ("train", "val"))
        print(f"{args.out}: already built ({n_train} train, {n_val} val photos)")
        return
    stamp.unlink(missing_ok=True)  # an interrupted rebuild must not look complete
    for sub in ("train", "val", "COPYRIGHT"):
        shutil.rmtree(args.out / sub, ignore_errors=True)
        (args.out / sub).mkdir(parents=True)

    rows = ["name\tsplit\tpackage\tpath_in_package\tsize"]
    with tempfile.TemporaryDirectory() as tmp:
        roots = fetch(list(SOURCES), Path(tmp))
        photos = []  # (name, package, path in package, file)
        for pkg, files in SOURCES.items():
            shutil.copyfile(roots[pkg] / "usr/share/doc" / pkg / "copyright", args.out / "COPYRIGHT" / pkg)
            for name, rel in files.items():
                if (roots[pkg] / rel).is_file():
                    photos.append((name, pkg, rel, roots[pkg] / rel))
                else:
                    print(f"warning: {pkg} has no {rel} (package changed?); skipped", file=sys.stderr)
        photos.sort(key=lambda p: p[0].lower())
        for i, (name, pkg, rel, src) in enumerate(photos):
            split = "val" if i % args.val_every == 0 else "train"
            dst = save_photo(src, args.out / split / name, args.short_side)
            with Image.open(dst) as im:
                rows.append(f"{dst.name}\t{split}\t{pkg}\t{rel}\t{im.width}x{im.height}")
    (args.out / "SOURCES.tsv").write_text("\n".join(rows) + "\n")
    stamp.write_text(json.dumps(settings, indent=1) + "\n")

    for split in ("train", "val"):
        files = list((args.out / split).iterdir())
        mb = sum(f.stat().st_size for f in files) / 2**20
        print(f"{args.out / split}: {len(files)} photos, {mb:.0f} MiB")
    print(f"licences: {args.out / 'COPYRIGHT'}, per-photo sources: {args.out / 'SOURCES.tsv'}")


if __name__ == "__main__":
    main()
