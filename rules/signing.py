"""Ed25519 signatures over a bundle's manifest (which holds every file's sha256).

The signature sits beside the manifest as ``signature.json`` (key id, public key, signature); the
digest of the bundle does not change when it is signed. A key id is the first 16 hex digits of the
sha256 of the raw public key.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import BundleError

SIGNATURE = "signature.json"


class BundleSignatureError(BundleError):
    """A bundle is unsigned where a signature is required, or its signature does not verify."""


@dataclass(frozen=True)
class Signature:
    key_id: str
    public_key: bytes
    signature: bytes


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def keygen(path: Path) -> str:
    """Write a private key to ``path`` (mode 600) and its public key to ``path.pub``; return the key id."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.chmod(path, 0o600)
    public = private.public_key()
    Path(f"{path}.pub").write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_id(_raw(public))


def load_public_key(source: str) -> bytes:
    """A trusted key: a path to a PEM public key, or the raw key in base64. Returns raw bytes."""
    path = Path(source)
    if path.is_file():
        key = serialization.load_pem_public_key(path.read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise BundleSignatureError(f"{source}: not an Ed25519 public key")
        return _raw(key)
    try:
        raw = base64.b64decode(source, validate=True)
    except ValueError as exc:
        raise BundleSignatureError(f"{source!r}: neither a PEM file nor a base64 Ed25519 key") from exc
    if len(raw) != 32:
        raise BundleSignatureError(f"{source!r}: an Ed25519 public key is 32 bytes")
    return raw


def sign(bundle_dir: Path, private_key: Path) -> str:
    try:
        private = serialization.load_pem_private_key(private_key.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise BundleSignatureError(f"{private_key}: cannot read the private key ({exc})") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise BundleSignatureError(f"{private_key}: not an Ed25519 private key")
    manifest = (bundle_dir / "manifest.json").read_bytes()
    public = _raw(private.public_key())
    record = {
        "key_id": key_id(public),
        "public_key": base64.b64encode(public).decode(),
        "signature": base64.b64encode(private.sign(manifest)).decode(),
    }
    tmp = bundle_dir / (SIGNATURE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, bundle_dir / SIGNATURE)
    return record["key_id"]


def read_signature(bundle_dir: Path) -> Signature | None:
    path = bundle_dir / SIGNATURE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return Signature(str(data["key_id"]), base64.b64decode(data["public_key"]), base64.b64decode(data["signature"]))
    except (ValueError, KeyError) as exc:
        raise BundleSignatureError(f"{path}: unreadable signature") from exc


def verify_signature(bundle_dir: Path, trusted: list[bytes] | None, required: bool) -> Signature | None:
    """Check the signature over the stored manifest. ``trusted``: raw public keys that may sign
    (None: any key). Raises BundleSignatureError; returns the signature (None if unsigned and
    not required)."""
    signature = read_signature(bundle_dir)
    if signature is None:
        if required:
            raise BundleSignatureError("bundle is not signed and rules.require_signature is on")
        return None
    if trusted is not None and signature.public_key not in trusted:
        raise BundleSignatureError(f"bundle is signed by key {signature.key_id}, which is not trusted")
    try:
        Ed25519PublicKey.from_public_bytes(signature.public_key).verify(
            signature.signature, (bundle_dir / "manifest.json").read_bytes())
    except (InvalidSignature, ValueError) as exc:
        raise BundleSignatureError(f"bad signature (key {signature.key_id}): the manifest was changed or the signature forged") from exc
    return signature
