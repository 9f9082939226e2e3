"""``bench submit``: a validated run copied into results/submissions with a signed manifest.

The manifest lists every file with its SHA-256; with a key, ``signature.json`` holds an
ed25519 signature of the manifest's canonical bytes and the public key, which
``bench validate`` checks. (The signature shows the files are unchanged since signing;
whose key it is, is for the reader to trust.)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from bench.errors import BenchError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
MANIFEST_SCHEMA = "joulebench/manifest"
COPIED = ("result.json", "trace.parquet", "journal.jsonl")
MAX_MANIFEST_BYTES = 1 << 20


def _canonical(manifest: dict) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode()


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise BenchError(f"{kind} {value!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return value


def _load_key(path: str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = Path(path).read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise BenchError(f"cannot load ed25519 private key {path}: "
                         f"{exc.__class__.__name__}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BenchError(f"{path} is not an ed25519 private key")
    return key


def submit(run_dir: Path | str, vendor: str, system: str, key: str | None = None,
           dest: Path | str = "results/submissions") -> Path:
    """Validate the run, copy it to dest/vendor/system/run_id with a manifest (and signature).

    Raises:
        BenchError: the run does not validate, bad names, the target exists, bad key.
    """
    from bench import provenance
    from bench.results import io
    from bench.results.validate import load_document, validate

    _check_name("vendor", vendor)
    _check_name("system", system)
    failed = [c for c in validate(run_dir) if not c.ok]
    if failed:
        raise BenchError(f"the run does not validate: {failed[0].rule}: {failed[0].reason}")
    doc, src = load_document(run_dir)
    run_id = _check_name("run_id", doc["run_id"])
    signer = _load_key(key) if key else None
    target = Path(dest) / vendor / system / run_id
    if target.exists():
        raise BenchError(f"{target} already exists")
    tmp = target.with_name(f".{run_id}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    files = {}
    for name in COPIED:
        p = src / name
        if p.is_file() and not p.is_symlink():
            shutil.copyfile(p, tmp / name)
            files[name] = io.sha256_file(tmp / name)
    manifest = {"schema": MANIFEST_SCHEMA, "version": 1, "vendor": vendor, "system": system,
                "run_id": run_id, "created_utc": provenance.utc_now(), "files": files}
    io.write_json_atomic(tmp / MANIFEST, manifest)
    if signer is not None:
        from cryptography.hazmat.primitives import serialization

        pub = signer.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
        io.write_json_atomic(tmp / SIGNATURE, {
            "algorithm": "ed25519", "public_key": pub.hex(),
            "signature": signer.sign(_canonical(manifest)).hex()})
    tmp.rename(target)
    return target


def verify(run_dir: Path) -> list[str]:
    """Check a submission's manifest hashes and, when present, its signature."""
    from bench.results import io
    from bench.results.validate import _safe_member

    p = run_dir / MANIFEST
    if p.is_symlink() or p.stat().st_size > MAX_MANIFEST_BYTES:
        return [f"{MANIFEST} is a link or too large"]
    try:
        manifest = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return [f"{MANIFEST} is not valid JSON"]
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA or \
            not isinstance(manifest.get("files"), dict):
        return [f"{MANIFEST} is not a joulebench manifest"]
    errors = []
    for name, digest in manifest["files"].items():
        try:
            f = _safe_member(run_dir, name)
        except Exception as exc:  # Invalid: a reference leaving the directory
            errors.append(str(exc))
            continue
        if not f.is_file():
            errors.append(f"{name} is listed in the manifest but missing")
        elif io.sha256_file(f) != digest:
            errors.append(f"{name} does not match the manifest's SHA-256")
    listed = set(manifest["files"]) | {MANIFEST, SIGNATURE}
    extra = sorted(x.name for x in run_dir.iterdir() if x.name not in listed)
    if extra:
        errors.append(f"files not in the manifest: {', '.join(extra[:3])}")
    sig = run_dir / SIGNATURE
    if sig.exists():
        errors.extend(_verify_signature(sig, manifest))
    return errors


def _verify_signature(sig: Path, manifest: dict) -> list[str]:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        return ["signature present but the cryptography package is not installed"]
    try:
        s = json.loads(sig.read_text(encoding="utf-8"))
        if s.get("algorithm") != "ed25519":
            return ["signature algorithm is not ed25519"]
        pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(s["public_key"]))
        pub.verify(bytes.fromhex(s["signature"]), _canonical(manifest))
    except InvalidSignature:
        return ["the ed25519 signature does not match the manifest"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [f"{SIGNATURE} is malformed"]
    return []
