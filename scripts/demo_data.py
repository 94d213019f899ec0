"""Build the real-photo sets (data/demo, data/more, data/holdout) from Debian and Ubuntu wallpaper packages.

    python scripts/demo_data.py [--out data/demo] [--short-side 1024] [--val-every 5] [--more-out data/more]
                                [--holdout-out data/holdout] [--deb-cache DIR]

The packages are fetched with `apt-get download` and unpacked with `dpkg -x` into a temporary folder: no
root, no install. Only the photographs are kept (the packages also ship vector and abstract art); they are
split into train/ and val/ by photo (sorted names, every `val_every`-th to val), and each package's
copyright file goes to COPYRIGHT/ (the photos are CC-BY / CC-BY-SA / CC0 / GPL: see those files, and
SOURCES.tsv for which package and file each photo comes from, with the source file's sha256). Run it again
and it does nothing.

Why downscale (default short side 1024): wallpapers are 2.5k-6k camera JPEGs, soft at the pixel level
(lens blur, demosaicing, shallow depth of field, JPEG), so a 256-pixel crop at full size is mostly a smooth
patch with little for x4 super-resolution to restore. An antialiased (Lanczos) downscale packs 2-4x more
scene into each crop, averages away the sources' JPEG blocks and sensor noise so the HR targets are clean,
brings the detail density near ImageNet's (~400 px photos, the paper's training data), and makes the
data loader decode 1.6 MP instead of 12 MP per crop. `--short-side 0` keeps the original files.

data/more (train only): the photographs of Ubuntu's wallpaper packages, the winners of its community contests
from 9.10 to 22.04 (CC-BY / CC-BY-SA, see COPYRIGHT/), 339 scenes where data/demo has 30. They are not in
Debian, so each .deb is fetched from the Ubuntu archive by URL and checked against the sha256 pinned below
(from the jammy Packages index), then unpacked with `dpkg -x` like the others. All of them go to train: the
validation photos stay data/demo/val, so every number measured on them stays comparable, and a photo that
looks like one of them (grey 64x64 thumbnails correlated above 0.95) is refused. Built only with
`--more-out data/more` (about 420 MB of packages). `--deb-cache DIR` takes those .debs from DIR where they
are (checked against the same sha256).

data/holdout/photos (with `--holdout-out`, which needs `--more-out`): 38 photographs from Ubuntu's 22.10-24.04
wallpaper packages (Budgie's and Ubuntu's, about 245 MB), listed with their sha256 and licence in
docs/holdout_sources.tsv, a larger validation set than data/demo/val's 8 photos. No training set uses
those packages; the build still checks, with training/data/disjoint.py, that no file and no scene (copy,
rescaled copy, crop) is shared with data/demo/{train,val} or data/more/train, writes the check's scores to
DISJOINT.json and refuses to mark the set complete otherwise (docs/holdout.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from training.data.disjoint import PARAMETERS, check_disjoint, file_sha256

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

UBUNTU_ARCHIVE = "http://archive.ubuntu.com/ubuntu/"
UBUNTU_DEBS = {
    "ubuntu-gnome-wallpapers-trusty": (
        "pool/universe/u/ubuntu-gnome-wallpapers/ubuntu-gnome-wallpapers-trusty_16.10.4_all.deb",
        "d685237159a651f911e1b07e3e5888bf459d3e2b83e6c521c3d7212fa0e33595",
    ),
    "ubuntu-gnome-wallpapers-utopic": (
        "pool/universe/u/ubuntu-gnome-wallpapers/ubuntu-gnome-wallpapers-utopic_16.10.4_all.deb",
        "7990ec1892da83e65b20cb4f7689062a440215a3f49a8c2d6edd1f8c21c9c2e2",
    ),
    "ubuntu-gnome-wallpapers-xenial": (
        "pool/universe/u/ubuntu-gnome-wallpapers/ubuntu-gnome-wallpapers-xenial_16.10.4_all.deb",
        "5b90c4955cbc8f2f7abf1fcc80acb865140a1684efbdb9a40effafbc4774d701",
    ),
    "ubuntu-gnome-wallpapers-yakkety": (
        "pool/universe/u/ubuntu-gnome-wallpapers/ubuntu-gnome-wallpapers-yakkety_16.10.4_all.deb",
        "96e221a29af008b9ae60a21e5b4ced5a72bca412f707c8d7cb0afb919e370630",
    ),
    "ubuntu-mate-wallpapers-photos": (
        "pool/universe/u/ubuntu-mate-artwork/ubuntu-mate-wallpapers-photos_22.04.17_all.deb",
        "46895c57eba133f259d3902681cbee231d94a4a49ca41b5d5b1575d636a24504",
    ),
    "ubuntu-wallpapers-artful": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-artful_22.04.4-0ubuntu1_all.deb",
        "ef7421633331c7c223d5287f353e6e9a9fbad569da3ce07b09d432e12ab55253",
    ),
    "ubuntu-wallpapers-bionic": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-bionic_22.04.4-0ubuntu1_all.deb",
        "98d827a3684f8075f19adf3c338fd41fba264a8cdd9c7a2d5e57b2d14d8e42f9",
    ),
    "ubuntu-wallpapers-cosmic": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-cosmic_22.04.4-0ubuntu1_all.deb",
        "b62b4d7f7946480e46c601dd9f45cd898d98c6f900357850acb067e65d374dd6",
    ),
    "ubuntu-wallpapers-disco": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-disco_22.04.4-0ubuntu1_all.deb",
        "2695820dbac0f0cc39c8b8b64912cf1ffd7e87290132a7be08e30b0d59a279e9",
    ),
    "ubuntu-wallpapers-eoan": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-eoan_22.04.4-0ubuntu1_all.deb",
        "fb8cad73bfc94b17f2c66b11a602ec40ed6039ae72eb5c6190a8f6b2ecd3c3c6",
    ),
    "ubuntu-wallpapers-focal": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-focal_22.04.4-0ubuntu1_all.deb",
        "4c998bc311a5d31c5ce3a525e0ba629352aa12c770fae42682ae937333a17ebd",
    ),
    "ubuntu-wallpapers-groovy": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-groovy_22.04.4-0ubuntu1_all.deb",
        "ddc02f93a643c320b9bd5e967b5a24e01df3ec1c66a5727f54715b8ac1ab7be0",
    ),
    "ubuntu-wallpapers-hirsute": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-hirsute_22.04.4-0ubuntu1_all.deb",
        "b331fa5cacea002b5bd4d510933ec22b00bbb83a4e0e8f31103585d2b8b63b50",
    ),
    "ubuntu-wallpapers-impish": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-impish_22.04.4-0ubuntu1_all.deb",
        "44487a919c3f7230120033945c20176f9bf5901caff5fd64deb8b941abccede6",
    ),
    "ubuntu-wallpapers-jammy": (
        "pool/main/u/ubuntu-wallpapers/ubuntu-wallpapers-jammy_22.04.4-0ubuntu1_all.deb",
        "029b733e09c96e7318ea9a53dc8b2b7ee96971ce600fd60487635f9317afb89f",
    ),
    "ubuntu-wallpapers-karmic": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-karmic_22.04.4-0ubuntu1_all.deb",
        "cf7260f5431c9528a1d80033c735995fa15b0f45a9e72b35ad2ba3d6a2efa20c",
    ),
    "ubuntu-wallpapers-lucid": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-lucid_22.04.4-0ubuntu1_all.deb",
        "a8fb8ab7a2f0b4b94be793c22031f40c2e72021c9306c53de6cb0759fd00a65d",
    ),
    "ubuntu-wallpapers-maverick": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-maverick_22.04.4-0ubuntu1_all.deb",
        "2a6139f2286f74eb4a38c7c12ecdcfc7cd4ab4e3cfc993cd1ff32284055ef1ae",
    ),
    "ubuntu-wallpapers-natty": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-natty_22.04.4-0ubuntu1_all.deb",
        "75a61909c07a64158e15a1a33c5a168a7c4e3b26b0e7e265e3edb3d28c42abf0",
    ),
    "ubuntu-wallpapers-oneiric": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-oneiric_22.04.4-0ubuntu1_all.deb",
        "1661a782c5bc64d5015a55c818096cc147ef6a595af6aa9ab167b2985a165296",
    ),
    "ubuntu-wallpapers-precise": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-precise_22.04.4-0ubuntu1_all.deb",
        "3a567af641d570e1c03a4c1549aa5dafd54e6d99abec183bba7d63bb8f59773c",
    ),
    "ubuntu-wallpapers-quantal": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-quantal_22.04.4-0ubuntu1_all.deb",
        "11b36ac04e3c7c1e93a6af751242b890f96a16fa6015dc983a4c29d930ecfe8b",
    ),
    "ubuntu-wallpapers-raring": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-raring_22.04.4-0ubuntu1_all.deb",
        "af039af9d3438df63da71f0a1b2f8cfb061b076cde466602b3e2efc60d61fd96",
    ),
    "ubuntu-wallpapers-saucy": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-saucy_22.04.4-0ubuntu1_all.deb",
        "703d735486c76c108b2e8ee9b99d5faf660836381cfbbdeb6cfd46a35c52d51d",
    ),
    "ubuntu-wallpapers-trusty": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-trusty_22.04.4-0ubuntu1_all.deb",
        "09205aee7376ac8351342c4ec2b3decdf564d0fc39fade7628c3379a64c4595c",
    ),
    "ubuntu-wallpapers-utopic": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-utopic_22.04.4-0ubuntu1_all.deb",
        "93f78d786b728b3698f4d229f52a01bd4854584397da1962937508f572e8f877",
    ),
    "ubuntu-wallpapers-vivid": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-vivid_22.04.4-0ubuntu1_all.deb",
        "b0da6fe6de92390a4af3a86c103bd3d4848c502958a77e7de5d9a36934c72c2e",
    ),
    "ubuntu-wallpapers-wily": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-wily_22.04.4-0ubuntu1_all.deb",
        "ced04e81f8659d24c2787a6319c2760bfac8800161c36bd37259b96f2daa709a",
    ),
    "ubuntu-wallpapers-xenial": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-xenial_22.04.4-0ubuntu1_all.deb",
        "e8cb26f5cc7a04c5ec233c16b870d987147c646a1709a07059cda408c6bdd3d9",
    ),
    "ubuntu-wallpapers-yakkety": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-yakkety_22.04.4-0ubuntu1_all.deb",
        "1dde2569d314ef2f47881032e770e088fbdff77ba0bd6052e7f4ee6232835bb8",
    ),
    "ubuntu-wallpapers-zesty": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-zesty_22.04.4-0ubuntu1_all.deb",
        "59ff25e26c06b1babb20e904fa511994a8487b8bf12d53f5048ba9e24c550ad2",
    ),
    "xubuntu-community-wallpapers-bionic": (
        "pool/universe/x/xubuntu-community-artwork/xubuntu-community-wallpapers-bionic_22.04.0_all.deb",
        "f02ca97910121571660cadca5a7802fadfbb6df719fa5bc4be812ae5304674d8",
    ),
    "xubuntu-community-wallpapers-focal": (
        "pool/universe/x/xubuntu-community-artwork/xubuntu-community-wallpapers-focal_22.04.0_all.deb",
        "02a97d11a78c81ccbd0021476f4c3df7bbaf97f2326664f1ee1ff953b0a4c890",
    ),
    "xubuntu-community-wallpapers-jammy": (
        "pool/universe/x/xubuntu-community-artwork/xubuntu-community-wallpapers-jammy_22.04.0_all.deb",
        "dbbe3e16f2ce381b07113bafda8354dd40e602dd482815cac8432e2b56a3ec7b",
    ),
    "xubuntu-community-wallpapers-trusty": (
        "pool/universe/x/xubuntu-community-artwork/xubuntu-community-wallpapers-trusty_22.04.0_all.deb",
        "7524125f9fcdcf09275d94ef305afe0c492d407152fb15b2784de735329a7de5",
    ),
    "xubuntu-community-wallpapers-xenial": (
        "pool/universe/x/xubuntu-community-artwork/xubuntu-community-wallpapers-xenial_22.04.0_all.deb",
        "35eb5566f61fbf159b8346a6c942db150de90ce5d4642013399ffb5cea54ae75",
    ),
}
UBUNTU_PHOTO_DIRS = ("usr/share/backgrounds", "usr/share/xfce4/backdrops")
# Every .jpg/.png of at least 1000 px on its short side in those folders is a photo, except these (picked by
# looking at every one): renders, logos, abstract and painted art, and one copy of each duplicate pair.
_UBUNTU_NOT_PHOTOS = """
    Aardvark_Wallpaper_Grey_4096x2304.png Beaver_Wallpaper_Grey_4096x2304.png
    Cuttlefish_Wallpaper_Grey_4096x2304.png Dingo_Wallpaper_Grey_4096x2304.png
    Ermine_Wallpaper_Grey_4096x2304.png Focal-Fossa_WP_4096x2304_GREY.png Gorilla_Wallpaper_Grey_4096x2304.png
    Hirsute-Hippo_WP_4096x2304_Grey.png Impish-Indri_WP_4096x2304_Grey.png
    Jammy-Jellyfish_WP_4096x2304_Grey.png
    Xerus_Wallpaper_Grey_4096x2304.png Yak_Wallpaper_Grey_4096x2304.png Zapus_Wallpaper_Grey_4096x2304.png
    160818-rgrd-a1_by_pierre_cante.jpg Definitive_Light_Zen_Orange_by_Pierre_Cante.jpg
    This_Is_Bionic_Beaver_by_Pierre_Cante.jpg Encounter_by_Lazardjin.jpg touch_de_vert_by_François_Cante.jpg
    80s_Disco_Dingo_Simulation_by_Abubakar_NK.jpg Disco_Dingo_Alt_Default_by_Abubakar_NK.png
    Ermine_lines_by_Gustavo_Brenner.png Flight_dive_by_Nicolas_Silva.png Ubuntu_80s_glitch_by_Abubakar_NK.jpg
    Ubuntu_gel_by_Midge_Mantissa_Sinnaeve.jpg hardy_wallpaper_uhd.png
    Abstract_Painting_Photo_by_Pierre_Châtel-Innocenti.jpg canvas_by_roytanck.jpg jj_dark_by_Hiking93.jpg
    jj_light_by_Hiking93.jpg Aubergine_Sea_by_Wyatt_Kirby.jpg Tri_Narwhal_by_momez.jpg
    Variations-On-Natty-Narwhal-1_by_madeinkobaia.jpg Stalking_Ocelot_by_Sayantan_Chaudhuri.jpg
    Cacomixtle_Ubunteño_by_Carlos_and_Paula_Morales.jpg I_am_a_Saucy_Salamander..._by_Juan_Pablo_Lauriente.jpg
    Saucy_Salamander_Abstract_by_José_Vera_alcivar.jpg Utopic_Unicorn__by_Bedis_ElAchКche.jpg
    150305-cinqAA_by_Pierre_Cante.jpg Abstract_Ubuntu_by_Marek_Koteluk.jpg Blue_by_dariuskws.jpg
    160218-deux-two_by_Pierre_Cante.jpg Black_hole_by_Marek_Koteluk.jpg ubuntu16_10_by_Khoir_Rudin.png
    ubuntu_wallpaper_16_10_02_by_screen_name_007.jpg Passion_by_Vilia_Majere.jpg
    there_is_something_human_in_that_stuff_by_Pierre_Cante.jpg
    weathercock-black-white.jpg Kronach_leuchtet_2014_by_Brian_Fox.jpg
"""
UBUNTU_NOT_PHOTOS = frozenset(_UBUNTU_NOT_PHOTOS.split())

# The held-out photos' packages (from the noble Packages index); which photos, in HOLDOUT_RECORD.
HOLDOUT_DEBS = {
    "budgie-wallpapers-kinetic": (
        "pool/universe/b/budgie-wallpapers/budgie-wallpapers-kinetic_24.04_all.deb",
        "73294d1c3023702f239fb45506f57a9ac8ab96f2038bd1aa67c92ef985c0c856",
    ),
    "budgie-wallpapers-lunar": (
        "pool/universe/b/budgie-wallpapers/budgie-wallpapers-lunar_24.04_all.deb",
        "5a4174407666b7bd986cccf6a28e1936d6a087173e60c66274c0a51d08ff1535",
    ),
    "budgie-wallpapers-mantic": (
        "pool/universe/b/budgie-wallpapers/budgie-wallpapers-mantic_24.04_all.deb",
        "4920a9bf424e44283370a16bb249ef84c6a0d3c992349efdf91787b4c0aa02d1",
    ),
    "budgie-wallpapers-noble": (
        "pool/universe/b/budgie-wallpapers/budgie-wallpapers-noble_24.04_all.deb",
        "ccc170788a1552c1fd7f88daae9e16e89f224a82f05dae2ef3f42b6abc55b8a6",
    ),
    "ubuntu-wallpapers-kinetic": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-kinetic_24.04.2_all.deb",
        "e4ee73ba38806cfab6688bf9dbf89b3a1c69bccc0f44e95a8b5c7063a2e2f1f2",
    ),
    "ubuntu-wallpapers-lunar": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-lunar_24.04.2_all.deb",
        "196e81cd6a24690e5347b6657bba328ce19038fc08a85fbabff5d1185b63f8cf",
    ),
    "ubuntu-wallpapers-mantic": (
        "pool/universe/u/ubuntu-wallpapers/ubuntu-wallpapers-mantic_24.04.2_all.deb",
        "8b278872c54ab00dafecc00479af2461ebc7753e79fb374aac06f0f291a8b8d5",
    ),
    "ubuntu-wallpapers-noble": (
        "pool/main/u/ubuntu-wallpapers/ubuntu-wallpapers-noble_24.04.2_all.deb",
        "528c1c7f55a351006ba2372de82c1f005b165cc5742d706a5fff90551dbfb9b0",
    ),
}
# name, package, path_in_package, sha256 of that file, licence (from the package's copyright file).
HOLDOUT_RECORD = Path(__file__).resolve().parents[1] / "docs/holdout_sources.tsv"


def unpack(deb: Path, root: Path) -> Path:
    """`dpkg -x` a package into root (no root rights, nothing installed)."""
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def fetch(packages: list[str], workdir: Path) -> dict[str, Path]:
    """apt-get download + dpkg -x each package; returns package -> unpacked root."""
    try:
        subprocess.run(["apt-get", "download", *packages], cwd=workdir, check=True)
    except (FileNotFoundError, subprocess.CalledProcessError) as e:
        sys.exit(
            f"apt-get download failed ({e}); this needs Debian/Ubuntu with package lists (apt-get update)"
        )
    return {pkg: unpack(next(workdir.glob(f"{pkg}_*.deb")), workdir / pkg) for pkg in packages}


def fetch_pinned(
    packages: dict[str, tuple[str, str]], workdir: Path, cache: Path | None = None
) -> dict[str, Path]:
    """Take each .deb from cache or the Ubuntu archive, check its pinned sha256, dpkg -x it; pkg -> root."""
    roots = {}
    for pkg, (pool_path, sha256) in packages.items():
        name = Path(pool_path).name
        deb = cache / name if cache is not None and (cache / name).is_file() else workdir / name
        if not deb.is_file():
            try:
                urllib.request.urlretrieve(UBUNTU_ARCHIVE + pool_path, deb)
            except OSError as e:
                sys.exit(f"could not fetch {UBUNTU_ARCHIVE + pool_path} ({e})")
        digest = file_sha256(deb)
        if digest != sha256:
            sys.exit(f"{deb.name}: sha256 {digest}, expected {sha256}; refusing it")
        roots[pkg] = unpack(deb, workdir / pkg)
    return roots


def thumbnail_signature(path: Path) -> np.ndarray:
    """Unit-norm, zero-mean grey 64x64 thumbnail of the centre square: near 1 for two copies of a photo."""
    with Image.open(path) as im:
        im = im.convert("L")
        w, h = im.size
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
        a = np.asarray(im.crop(box).resize((64, 64), Image.Resampling.BOX), np.float64).ravel()
    a -= a.mean()
    return a / (np.linalg.norm(a) + 1e-9)


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


def start_build(out: Path, settings: dict, subdirs: tuple[str, ...]) -> bool:
    """False when `out` was completely built with these settings; else empties its subdirs for a rebuild."""
    stamp = out / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(settings)):
        return False
    stamp.unlink(missing_ok=True)  # an interrupted rebuild must not look complete
    for sub in subdirs:
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    return True


def source_row(dst: Path, split: str, pkg: str, rel: str, sha256: str) -> str:
    """One SOURCES.tsv line: the saved photo, its split, which package and file it came from, its sha256."""
    with Image.open(dst) as im:
        return f"{dst.name}\t{split}\t{pkg}\t{rel}\t{im.width}x{im.height}\t{sha256}"


def finish_build(out: Path, settings: dict, rows: list[str]) -> None:
    """SOURCES.tsv, then the stamp that marks `out` complete."""
    (out / "SOURCES.tsv").write_text(
        "\n".join(["name\tsplit\tpackage\tpath_in_package\tsize\tsha256", *rows]) + "\n"
    )
    (out / STAMP).write_text(json.dumps(settings, indent=1) + "\n")


def build_more(out: Path, short_side: int, val_dir: Path, deb_cache: Path | None) -> None:
    """data/more/train: Ubuntu's contest photos, none of which resembles a validation photo."""
    settings = {"debs": UBUNTU_DEBS, "not_photos": sorted(UBUNTU_NOT_PHOTOS), "short_side": short_side}
    if not start_build(out, settings, ("train", "COPYRIGHT")):
        print(f"{out}: already built ({len(list((out / 'train').iterdir()))} train photos)")
        return
    val_signatures = [thumbnail_signature(p) for p in sorted(val_dir.iterdir())]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        roots = fetch_pinned(UBUNTU_DEBS, Path(tmp), deb_cache)
        for pkg, root in roots.items():
            shutil.copyfile(root / "usr/share/doc" / pkg / "copyright", out / "COPYRIGHT" / pkg)
            release = pkg.rsplit("-", 1)[1]
            for folder in UBUNTU_PHOTO_DIRS:
                for src in sorted((root / folder).rglob("*")):
                    if src.suffix.lower() not in (".jpg", ".png") or src.is_symlink() or not src.is_file():
                        continue
                    if src.name in UBUNTU_NOT_PHOTOS:
                        continue
                    with Image.open(src) as im:
                        if min(im.size) < 1000:
                            continue
                    signature = thumbnail_signature(src)
                    if any(float(signature @ v) > 0.95 for v in val_signatures):
                        print(f"skipping {pkg}/{src.name}: it looks like a validation photo", file=sys.stderr)
                        continue
                    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", src.stem)
                    dst = save_photo(src, out / "train" / f"{release}__{stem}", short_side)
                    rows.append(
                        source_row(dst, "train", pkg, src.relative_to(root).as_posix(), file_sha256(src))
                    )
    finish_build(out, settings, rows)
    files = list((out / "train").iterdir())
    mb = sum(f.stat().st_size for f in files) / 2**20
    print(f"{out / 'train'}: {len(files)} photos, {mb:.0f} MiB (licences: {out / 'COPYRIGHT'})")


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def set_photos(root: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """A built set's photos ('set/split/file' -> file) and their sources' sha256 where SOURCES.tsv has it."""
    files = {f"{root.name}/{s}/{p.name}": p for s in ("train", "val") for p in sorted((root / s).glob("*"))}
    rows = read_tsv(root / "SOURCES.tsv")
    return files, {f"{root.name}/{r['split']}/{r['name']}": r["sha256"] for r in rows if r.get("sha256")}


def build_holdout(out: Path, short_side: int, training_sets: list[Path], deb_cache: Path | None) -> None:
    """data/holdout/photos: HOLDOUT_RECORD's photos; not marked built unless disjoint from training_sets."""
    record = read_tsv(HOLDOUT_RECORD)
    missing = [str(s) for s in training_sets if not (s / STAMP).is_file()]
    if missing:
        sys.exit(f"{', '.join(missing)}: not built; the held-out photos are checked against it")
    # A training set rebuilt with other settings has another stamp: the held-out set is rebuilt and checked.
    against = {str(s): json.loads((s / STAMP).read_text()) for s in training_sets}
    settings = {
        "debs": HOLDOUT_DEBS,
        "photos": record,
        "short_side": short_side,
        "check": PARAMETERS,
        "against": against,
    }
    if not start_build(out, settings, ("photos", "COPYRIGHT")):
        print(f"{out}: already built ({len(list((out / 'photos').iterdir()))} photos)")
        return
    rows, photos, sources = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        roots = fetch_pinned(HOLDOUT_DEBS, Path(tmp), deb_cache)
        for pkg, root in roots.items():
            shutil.copyfile(root / "usr/share/doc" / pkg / "copyright", out / "COPYRIGHT" / pkg)
        for r in record:
            src = roots[r["package"]] / r["path_in_package"]
            digest = file_sha256(src)
            if digest != r["sha256"]:
                sys.exit(
                    f"{r['package']}: {r['path_in_package']} is {digest}, {HOLDOUT_RECORD} pins {r['sha256']}"
                )
            dst = save_photo(src, out / "photos" / r["name"], short_side)
            rows.append(source_row(dst, "holdout", r["package"], r["path_in_package"], digest))
            photos[dst.name], sources[dst.name] = dst, digest
    others, other_sources = {}, {}
    for s in training_sets:
        files, digests = set_photos(s)
        others |= files
        other_sources |= digests
    report = check_disjoint(photos, others, sources, other_sources)
    (out / "DISJOINT.json").write_text(json.dumps(report, indent=1) + "\n")
    top, crop = report["max_cross_score"], report["calibration_min"]
    print(
        f"{out}: {len(photos)} photos against {len(others)} training photos in {report['seconds']:.0f} s; "
        f"closest {top['score']:.4f} ({top['photo']} ~ {top['other']}), test crops >= {crop['score']:.4f}"
    )
    if not report["ok"]:
        sys.exit(f"{out}: shared files or scenes, or a missed test crop: see {out / 'DISJOINT.json'}")
    finish_build(out, settings, rows)


def build_demo(out: Path, short_side: int, val_every: int) -> None:
    """data/demo/{train,val}: the Debian packages' photos, every `val_every`-th by name to val."""
    settings = {"sources": SOURCES, "short_side": short_side, "val_every": val_every}
    if not start_build(out, settings, ("train", "val", "COPYRIGHT")):
        n_train, n_val = (len(list((out / s).iterdir())) for s in ("train", "val"))
        print(f"{out}: already built ({n_train} train, {n_val} val photos)")
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        roots = fetch(list(SOURCES), Path(tmp))
        photos = []  # (name, package, path in package, file)
        for pkg, files in SOURCES.items():
            shutil.copyfile(roots[pkg] / "usr/share/doc" / pkg / "copyright", out / "COPYRIGHT" / pkg)
            for name, rel in files.items():
                if (roots[pkg] / rel).is_file():
                    photos.append((name, pkg, rel, roots[pkg] / rel))
                else:
                    print(f"warning: {pkg} has no {rel} (package changed?); skipped", file=sys.stderr)
        photos.sort(key=lambda p: p[0].lower())
        for i, (name, pkg, rel, src) in enumerate(photos):
            split = "val" if i % val_every == 0 else "train"
            dst = save_photo(src, out / split / name, short_side)
            rows.append(source_row(dst, split, pkg, rel, file_sha256(src)))
    finish_build(out, settings, rows)

    for split in ("train", "val"):
        files = list((out / split).iterdir())
        mb = sum(f.stat().st_size for f in files) / 2**20
        print(f"{out / split}: {len(files)} photos, {mb:.0f} MiB")
    print(f"licences: {out / 'COPYRIGHT'}, per-photo sources: {out / 'SOURCES.tsv'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/demo"))
    ap.add_argument("--more-out", default="", help="also build Ubuntu's photos (train only) here: data/more")
    ap.add_argument(
        "--short-side", type=int, default=1024, help="downscale to this short side; 0 keeps originals"
    )
    ap.add_argument("--val-every", type=int, default=5, help="every n-th photo (sorted by name) goes to val")
    ap.add_argument("--holdout-out", default="", help="also build the held-out photos here: data/holdout")
    ap.add_argument("--deb-cache", type=Path, help="take the Ubuntu .debs from this folder where they are")
    args = ap.parse_args()
    if args.holdout_out and not args.more_out:
        ap.error("--holdout-out needs --more-out: the held-out photos are checked against those photos")
    build_demo(args.out, args.short_side, args.val_every)
    if args.more_out:
        build_more(Path(args.more_out), args.short_side, args.out / "val", args.deb_cache)
    if args.holdout_out:
        build_holdout(
            Path(args.holdout_out), args.short_side, [args.out, Path(args.more_out)], args.deb_cache
        )


if __name__ == "__main__":
    main()
