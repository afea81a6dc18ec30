"""Unpack rule-set archives (.tar.gz, .tgz, .tar, .zip) and fetch them from https:// URLs, safely.

Archives are hostile input: every member is checked before a byte is written. Refused: absolute
paths, ``..`` components, links of any kind, devices, more than ``MAX_MEMBERS`` members, a member
over ``MAX_FILE_BYTES``, a total over ``MAX_TOTAL_BYTES``, and zip members whose compression ratio
betrays a bomb. Members are streamed with a running count, so a lying header cannot exceed the caps.
Nothing is written outside the destination directory.
"""
from __future__ import annotations

import hashlib
import shutil
import ssl
import tarfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

from .errors import BundleSourceError

MAX_MEMBERS = 5000
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_TOTAL_BYTES = 256 * 1024 * 1024
MAX_RATIO = 200  # uncompressed / compressed, per zip member
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith((".tar.gz", ".tgz", ".tar", ".zip"))


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if not path.parts or path.is_absolute() or name.startswith(("/", "\\")) or ":" in path.parts[0]:
        raise BundleSourceError(f"archive member {name!r} has an absolute path")
    if any(part == ".." for part in path.parts) or "\\" in name:
        raise BundleSourceError(f"archive member {name!r} escapes the archive (..)")
    return path


def _copy_capped(src: IO[bytes], dest: Path, budget: list[int], name: str) -> None:
    written = 0
    with open(dest, "wb") as out:
        while True:
            chunk = src.read(65536)
            if not chunk:
                return
            written += len(chunk)
            budget[0] -= len(chunk)
            if written > MAX_FILE_BYTES:
                raise BundleSourceError(f"archive member {name!r} is larger than {MAX_FILE_BYTES} bytes")
            if budget[0] < 0:
                raise BundleSourceError(f"archive unpacks to more than {MAX_TOTAL_BYTES} bytes")
            out.write(chunk)


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack into ``dest`` (which must be empty); return the rule-set root (the single top-level
    directory, if the archive has one, as CRS release tarballs do)."""
    budget = [MAX_TOTAL_BYTES]
    try:
        if archive.name.lower().endswith(".zip"):
            _unzip(archive, dest, budget)
        else:
            _untar(archive, dest, budget)
    except BundleSourceError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise BundleSourceError(f"{archive.name}: not a readable archive ({exc})") from exc
    entries = [p for p in dest.iterdir()] if dest.is_dir() else []
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def _untar(archive: Path, dest: Path, budget: list[int]) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        if len(members) > MAX_MEMBERS:
            raise BundleSourceError(f"archive has more than {MAX_MEMBERS} members")
        for member in members:
            name = _safe_name(member.name)
            if member.issym() or member.islnk():
                raise BundleSourceError(f"archive member {member.name!r} is a link (links are refused)")
            target = dest.joinpath(*name.parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                raise BundleSourceError(f"archive member {member.name!r} is not a regular file")
            if member.size > MAX_FILE_BYTES:
                raise BundleSourceError(f"archive member {member.name!r} is larger than {MAX_FILE_BYTES} bytes")
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            _copy_capped(src, target, budget, member.name)


def _unzip(archive: Path, dest: Path, budget: list[int]) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise BundleSourceError(f"archive has more than {MAX_MEMBERS} members")
        for info in infos:
            name = _safe_name(info.filename)
            mode = (info.external_attr >> 16) & 0o170000
            if mode == 0o120000:
                raise BundleSourceError(f"archive member {info.filename!r} is a link (links are refused)")
            target = dest.joinpath(*name.parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if info.file_size > MAX_FILE_BYTES:
                raise BundleSourceError(f"archive member {info.filename!r} is larger than {MAX_FILE_BYTES} bytes")
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
                raise BundleSourceError(f"archive member {info.filename!r} looks like a zip bomb")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src:
                _copy_capped(src, target, budget, info.filename)


def download(url: str, sha256: str | None, dest: Path) -> Path:
    """Fetch an https:// URL into ``dest`` and check its sha256 (required: a pinned download)."""
    if not url.startswith("https://"):
        raise BundleSourceError("only https:// URLs can be imported")
    if not sha256 or len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256.lower()):
        raise BundleSourceError("a URL import needs --sha256 with the archive's 64-hex-digit digest")
    name = url.rsplit("/", 1)[-1].split("?")[0] or "bundle.tar.gz"
    target = dest / name
    digest = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=30, context=ssl.create_default_context()) as resp, open(target, "wb") as out:  # noqa: S310 - https only
            while True:
                chunk = resp.read(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise BundleSourceError(f"{url}: larger than {MAX_DOWNLOAD_BYTES} bytes")
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        raise BundleSourceError(f"{url}: download failed ({exc})") from exc
    if digest.hexdigest() != sha256.lower():
        raise BundleSourceError(f"{url}: sha256 is {digest.hexdigest()}, expected {sha256.lower()}")
    return target
