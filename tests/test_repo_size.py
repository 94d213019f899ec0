"""The working tree that travels to a lent GPU machine (tracked and untracked-not-ignored files) stays under
its 64 MiB upload limit (issue #20, item 5): experiment model files belong outside git."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UPLOAD_LIMIT = 64 * 2**20


def travelling_files() -> list[Path]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout  # fmt: skip
    return [REPO / name for name in listed.decode().split("\0") if name]


def test_the_tree_that_travels_to_a_gpu_machine_fits_its_upload_limit():
    files = [path for path in travelling_files() if path.is_file()]
    total = sum(path.stat().st_size for path in files)
    largest = sorted(files, key=lambda path: -path.stat().st_size)[:5]
    assert total < UPLOAD_LIMIT, f"tracked tree {total / 2**20:.1f} MiB >= 64 MiB; largest: " + ", ".join(
        f"{path.relative_to(REPO)} ({path.stat().st_size / 2**20:.1f} MiB)" for path in largest
    )
