"""``bench submit``: a validated run copied into results/submissions with a signed manifest.

The manifest and its ed25519 signature are made by :mod:`bench.results.manifest`, which
``bench validate`` also uses to check them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from bench.errors import BenchError
from bench.results import io, load, manifest

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
COPIED = ("result.json", "trace.parquet", "journal.jsonl")


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise BenchError(f"{kind} {value!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return value


def submit(run_dir: Path | str, vendor: str, system: str, key: str | None = None,
           dest: Path | str = "results/submissions") -> Path:
    """Validate the run, copy it to dest/vendor/system/run_id with a manifest (and signature).

    Raises:
        BenchError: the run does not validate, bad names, the target exists, bad key, the
            destination cannot be written.
    """
    from bench import provenance
    from bench.results.validate import validate

    _check_name("vendor", vendor)
    _check_name("system", system)
    failed = [c for c in validate(run_dir) if not c.ok]
    if failed:
        raise BenchError(f"the run does not validate: {failed[0].rule}: {failed[0].reason}")
    doc, src = load.load_document(run_dir)
    run_id = _check_name("run_id", doc["run_id"])
    signer = manifest.load_key(key) if key else None
    target = Path(dest) / vendor / system / run_id
    if target.exists():
        raise BenchError(f"{target} already exists")
    tmp = target.with_name(f".{run_id}.tmp")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for name in COPIED:
            p = src / name
            if p.is_file() and not p.is_symlink():
                with io.atomic_path(tmp / name) as t:
                    shutil.copyfile(p, t)
        m = manifest.build(vendor, system, run_id, manifest.hashes(tmp, COPIED),
                           provenance.utc_now())
        manifest.write(tmp, m, signer)
        tmp.rename(target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BenchError(f"cannot write the submission under {dest}: "
                         f"{exc.strerror or exc.__class__.__name__}") from None
    return target
