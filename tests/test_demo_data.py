"""scripts/demo_data.py and training/data/disjoint.py: what keeps training, validation and held-out photos
apart."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from tests.script_support import load_script
from training.data import disjoint

demo_data = load_script("scripts/demo_data.py")


def test_a_resized_recompressed_copy_of_a_validation_photo_is_recognised(tmp_path):
    """The guard against training on a validation scene: another package's copy of the same photo, at another
    size and JPEG quality, correlates above 0.95 and other photos do not. (A re-cropped copy can fall below:
    the photos were also compared by eye.)"""
    val = Image.fromarray(skdata.astronaut())
    val.save(tmp_path / "val.png")
    val.resize((1000, 1000), Image.Resampling.LANCZOS).save(tmp_path / "copy.jpg", quality=80)
    for name in ("coffee", "chelsea", "rocket"):
        Image.fromarray(getattr(skdata, name)()).save(tmp_path / f"{name}.png")
    reference = demo_data.thumbnail_signature(tmp_path / "val.png")
    assert float(demo_data.thumbnail_signature(tmp_path / "copy.jpg") @ reference) > 0.95
    for name in ("coffee", "chelsea", "rocket"):
        other = demo_data.thumbnail_signature(tmp_path / f"{name}.png")
        assert float(other @ reference) < 0.95, name
        assert np.isclose(np.linalg.norm(other), 1.0)


def test_ubuntu_packages_are_pinned_by_name_and_sha256():
    for package, (pool_path, sha256) in (demo_data.UBUNTU_DEBS | demo_data.HOLDOUT_DEBS).items():
        assert re.fullmatch(
            rf"pool/(main|universe)/[a-z]/[a-z-]+/{package}_[0-9.]+(-0ubuntu1)?_all\.deb", pool_path
        )
        assert re.fullmatch(r"[0-9a-f]{64}", sha256)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """scikit-image's photos, and copies of `coffee` the scene check must recognise."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("coffee", "chelsea", "rocket", "astronaut"):
        Image.fromarray(getattr(skdata, name)()).save(folder / f"{name}.png")
    coffee = Image.open(folder / "coffee.png")
    w, h = coffee.size
    crop = coffee.crop(
        (round(0.35 * w), round(0.05 * h), round(0.95 * w), round(0.65 * h))
    )  # 60%, off centre
    crop.resize((round(crop.width * 0.7), round(crop.height * 0.7)), Image.Resampling.LANCZOS).save(
        folder / "crop.jpg", quality=85
    )
    coffee.resize((round(w * 0.9), round(h * 0.9)), Image.Resampling.LANCZOS).save(
        folder / "copy.jpg", quality=80
    )
    shutil.copyfile(folder / "coffee.png", folder / "dup.png")
    return {p.name: p for p in folder.iterdir()}


def pick(photos: dict[str, Path], *names: str) -> dict[str, Path]:
    return {n: photos[n] for n in names}


def test_the_check_finds_a_duplicate_a_crop_and_a_rescaled_reencoded_copy(photos):
    report = disjoint.check_disjoint(
        pick(photos, "dup.png", "crop.jpg", "copy.jpg"), pick(photos, "coffee.png", "chelsea.png")
    )
    assert report["shared_files"] == [["dup.png", "coffee.png"]]
    assert sorted(s[:2] for s in report["shared_scenes"]) == [
        ["copy.jpg", "coffee.png"],
        ["crop.jpg", "coffee.png"],
        ["dup.png", "coffee.png"],
    ]
    assert not report["ok"]


def test_the_check_passes_different_photos_and_finds_its_own_test_crops(photos):
    report = disjoint.check_disjoint(
        pick(photos, "rocket.png", "astronaut.png"), pick(photos, "coffee.png", "chelsea.png")
    )
    assert report["ok"], report
    assert not report["shared_files"] and not report["shared_scenes"]
    assert report["max_cross_score"]["score"] < disjoint.THRESHOLD
    assert min(report["calibration"].values()) >= disjoint.THRESHOLD


def test_a_recorded_source_digest_counts_as_a_shared_file(photos):
    """Two sets built from the same source file share it even when their written files differ."""
    digest = "ab" * 32
    report = disjoint.check_disjoint(
        pick(photos, "rocket.png"),
        pick(photos, "chelsea.png"),
        {"rocket.png": digest},
        {"demo/val/x.png": digest},
    )
    assert report["shared_files"] == [["rocket.png", "demo/val/x.png"]]
    assert not report["ok"]


def test_holdout_record_pins_photos_of_packages_no_training_set_uses():
    """The committed record of the held-out photos against the training sets' package lists: data/more takes
    every photo of its packages, so a held-out photo must come from another package."""
    rows = demo_data.read_tsv(demo_data.HOLDOUT_RECORD)
    assert len(rows) >= 24
    assert {r["package"] for r in rows} == set(demo_data.HOLDOUT_DEBS)
    assert not set(demo_data.HOLDOUT_DEBS) & (set(demo_data.SOURCES) | set(demo_data.UBUNTU_DEBS))
    names = {r["name"] for r in rows}
    assert len(names) == len({r["sha256"] for r in rows}) == len(rows)
    assert not names & {name for files in demo_data.SOURCES.values() for name in files}
    for r in rows:
        assert re.fullmatch(r"[0-9a-f]{64}", r["sha256"]), r
        assert Path(r["path_in_package"]).stem == r["name"], r
        assert r["licence"] in {"CC0", "CC-BY-SA-2.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0"}, r


def test_build_holdout_is_refused_while_a_training_set_holds_a_crop_of_it(tmp_path, monkeypatch, photos):
    package = tmp_path / "package"
    (package / "usr/share/doc/fake").mkdir(parents=True)
    (package / "usr/share/doc/fake/copyright").write_text("CC0\n")
    (package / "img").mkdir()
    record = ["name\tpackage\tpath_in_package\tsha256\tlicence"]
    for name in ("rocket", "astronaut"):
        shutil.copyfile(photos[f"{name}.png"], package / "img" / f"{name}.png")
        record.append(f"{name}\tfake\timg/{name}.png\t{disjoint.file_sha256(photos[f'{name}.png'])}\tCC0")
    (tmp_path / "record.tsv").write_text("\n".join(record) + "\n")
    monkeypatch.setattr(demo_data, "HOLDOUT_RECORD", tmp_path / "record.tsv")
    monkeypatch.setattr(demo_data, "HOLDOUT_DEBS", {"fake": ("pool/f/fake/fake_1_all.deb", "0" * 64)})
    monkeypatch.setattr(demo_data, "fetch_pinned", lambda packages, workdir, cache: {"fake": package})
    demo, more, out = tmp_path / "demo", tmp_path / "more", tmp_path / "holdout"
    for split, name in ((demo / "train", "coffee.png"), (demo / "val", "chelsea.png")):
        split.mkdir(parents=True)
        shutil.copyfile(photos[name], split / name)
    demo_data.finish_build(demo, {"demo": 1}, [])
    (more / "train").mkdir(parents=True)
    astronaut = Image.open(photos["astronaut.png"])
    astronaut.crop((40, 200, 352, 512)).save(more / "train" / "crop.jpg", quality=85)
    demo_data.finish_build(more, {"more": 1}, [])

    with pytest.raises(SystemExit):
        demo_data.build_holdout(out, 1024, [demo, more], None)
    assert not (out / demo_data.STAMP).exists()
    report = json.loads((out / "DISJOINT.json").read_text())
    assert [s[:2] for s in report["shared_scenes"]] == [["astronaut.png", "more/train/crop.jpg"]]

    (more / "train" / "crop.jpg").unlink()
    demo_data.build_holdout(out, 1024, [demo, more], None)
    assert (out / demo_data.STAMP).is_file()
    assert sorted(p.name for p in (out / "photos").iterdir()) == ["astronaut.png", "rocket.png"]
    sources = demo_data.read_tsv(out / "SOURCES.tsv")
    assert {r["sha256"] for r in sources} == {r.split("\t")[3] for r in record[1:]}
    assert json.loads((out / "DISJOINT.json").read_text())["ok"]
