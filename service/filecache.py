"""Small helpers for caches on disk that several processes may fill at once (ORT graphs, TensorRT engines)."""

import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_SHA256 = re.compile(r"[0-9a-f]{64}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def memo_sha256(path: Path, memo_dir: Path) -> str:
    """`file_sha256`, remembered in `memo_dir` by the file's identity so a big model is hashed once, not at
    every start (the full-size graph, 666 MiB, takes about a second). The identity holds the inode, size,
    mtime and ctime: a rewrite changes the ctime (which no one can set back), a replacement the inode."""
    st = path.stat()
    identity = [str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    memo = memo_dir / hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
    try:
        remembered = memo.read_text()
        if _SHA256.fullmatch(remembered):
            return remembered
    except OSError:
        pass
    digest = file_sha256(path)
    try:
        memo_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(memo, digest.encode())
    except OSError:
        pass  # an unwritable memo only costs the hash again next time
    return digest


@contextmanager
def published(path: Path) -> Iterator[Path]:
    """A fresh sibling of `path` to write; renamed onto `path` when the block succeeds, removed otherwise.

    Readers see the old file or the whole new one, never half of one (a rename within a folder is atomic).
    The name is unique across processes and hosts sharing the folder, not just by pid (pid 1 in every
    container)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        yield partial
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    with published(path) as partial:
        partial.write_bytes(data)
