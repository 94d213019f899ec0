import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("RSD_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The paper/official-code reference folder; tests that need it skip loudly when it is absent."""
    if not (REFERENCE_DIR / "golden" / "config.json").is_file():
        pytest.skip(f"reference data not found at {REFERENCE_DIR} (set RSD_REFERENCE_DIR); skipping")
    return REFERENCE_DIR


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Backends and `rsd` subprocesses fill a cache of the test run's own, never the user's ~/.cache/rsd."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RSD_CACHE_DIR", str(tmp_path_factory.mktemp("rsd-cache")))
        yield
