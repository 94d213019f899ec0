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
