"""A submission's manifest: file hashes, and its ed25519 signature made and checked.

The manifest lists every file of a submitted run with its SHA-256; ``signature.json``
holds an ed25519 signature of the manifest's canonical bytes and the public key. (The
signature shows the files are unchanged since signing; whose key it is, is for the reader
to trust.) ``submit`` builds and signs; ``validate`` verifies; neither imports the other.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.errors import BenchError
from bench.results import io, load

MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
MANIFEST_SCHEMA = "joulebench/manifest"
MAX_MANIFEST_BYTES = 1 << 20


def canonical(manifest: dict) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, strict JSON."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode()


def hashes(folder: Path, names) -> dict[str, str]:
    """{name: SHA-256 hex} of the regular (non-link) files ``names`` present in ``folder``."""
    out = {}
    for name in names:
        p = Path(folder) / name
        if p.is_file() and not p.is_symlink():
            out[name] = io.sha256_file(p)
    return out


def build(vendor: str, system: str, run_id: str, files: dict[str, str],
          created_utc: str) -> dict:
    """The manifest document for the hashed ``files``."""
    return {"schema": MANIFEST_SCHEMA, "version": 1, "vendor": vendor, "system": system,
            "run_id": run_id, "created_utc": created_utc, "files": dict(files)}


def load_key(path: str):
    """An ed25519 private key from a PEM file (unencrypted).

    Raises:
        BenchError: unreadable, not PEM, or not an ed25519 key.
    """
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


def sign(manifest: dict, key) -> dict:
    """The signature document of ``manifest`` by ``key`` (an Ed25519PrivateKey)."""
    from cryptography.hazmat.primitives import serialization

    pub = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return {"algorithm": "ed25519", "public_key": pub.hex(),
            "signature": key.sign(canonical(manifest)).hex()}


def write(folder: Path, manifest: dict, key=None) -> None:
    """Write ``manifest.json`` (and, with ``key``, ``signature.json``) atomically."""
    io.write_json_atomic(Path(folder) / MANIFEST, manifest)
    if key is not None:
        io.write_json_atomic(Path(folder) / SIGNATURE, sign(manifest, key))


def _read_small_json(p: Path, name: str):
    if p.is_symlink() or not p.is_file():
        raise load.Invalid(f"{name} is a link or not a file")
    return load.loads_json(load.read_capped(p, MAX_MANIFEST_BYTES), name, MAX_MANIFEST_BYTES)


def verify(run_dir: Path) -> list[str]:
    """Check a submission's manifest hashes and, when present, its signature.

    Returns:
        One message per problem; empty when the files match the (signed) manifest.
    """
    run_dir = Path(run_dir)
    try:
        manifest = _read_small_json(run_dir / MANIFEST, MANIFEST)
    except load.Invalid as exc:
        return [str(exc)]
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA or \
            not isinstance(manifest.get("files"), dict):
        return [f"{MANIFEST} is not a joulebench manifest"]
    errors = []
    for name, digest in manifest["files"].items():
        try:
            f = load.safe_member(run_dir, name)
        except load.Invalid as exc:
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
    if (run_dir / SIGNATURE).exists() or (run_dir / SIGNATURE).is_symlink():
        errors.extend(verify_signature(run_dir / SIGNATURE, manifest))
    return errors


def verify_signature(sig: Path, manifest: dict) -> list[str]:
    """Check ``signature.json`` against the manifest's canonical bytes."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        return ["signature present but the cryptography package is not installed"]
    try:
        s = _read_small_json(sig, SIGNATURE)
        if not isinstance(s, dict) or s.get("algorithm") != "ed25519":
            return ["signature algorithm is not ed25519"]
        pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(s["public_key"]))
        pub.verify(bytes.fromhex(s["signature"]), canonical(manifest))
    except InvalidSignature:
        return ["the ed25519 signature does not match the manifest"]
    except load.Invalid as exc:
        return [str(exc)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return [f"{SIGNATURE} is malformed"]
    return []
