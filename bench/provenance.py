"""Where a result came from: harness version, git commit, source hash, host, libraries."""

from __future__ import annotations

import hashlib
import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import bench

PACKAGE_DIR = Path(bench.__file__).resolve().parent
LIBRARIES = ("torch", "transformers", "numpy", "numba", "nvidia-ml-py", "pandas", "pyarrow")


def utc_now() -> str:
    """The current UTC time, ISO 8601 with a Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def source_sha256() -> str:
    """SHA-256 over the harness's Python sources (path and content, in sorted order)."""
    h = hashlib.sha256()
    roots = [PACKAGE_DIR]
    import bench.kernels

    kdir = Path(bench.kernels.__file__).resolve().parent
    if kdir not in roots:
        roots.append(kdir)
    for root in roots:
        for p in sorted(root.rglob("*.py")):
            h.update(p.relative_to(root.parent).as_posix().encode())
            h.update(b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


def git_commit() -> dict:
    """The git commit of the harness checkout, and whether it had local changes."""
    try:
        top = PACKAGE_DIR.parent
        sha = subprocess.run(["git", "-C", str(top), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(top), "status", "--porcelain", "--", "bench",
                                "kernels"], capture_output=True, text=True, timeout=5,
                               check=True).stdout.strip() != ""
        return {"commit": sha, "dirty": dirty, "reason": None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "reason": "not a git checkout"}


def library_versions() -> dict:
    """Installed versions of the libraries that shape a result (None if absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def collect() -> dict:
    """The provenance block of a result document."""
    from bench.devices.cpu import cpu_info

    return {
        "harness": {"name": "joulebench", "version": bench.__version__, **git_commit(),
                    "source_sha256": source_sha256()},
        "host": {"hostname": socket.gethostname(), "os": platform.platform(),
                 "cpu": cpu_info()},
        "libraries": library_versions(),
        "command": sys.argv[:],
    }
