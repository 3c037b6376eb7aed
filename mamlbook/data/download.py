"""Checked downloads: temp file, resume, checksum, HTML detection, atomic move into place.

Chapter 5's downloads. What :func:`download` does, step by step: docs/data.md, section "Checked downloads".
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ..errors import MamlbookError

__all__ = ["DownloadError", "ChecksumError", "HTMLInsteadOfDataError", "TruncatedDownloadError", "file_hash",
           "verify_file", "looks_like_html", "download"]

_CHUNK = 1 << 16


class DownloadError(MamlbookError, RuntimeError):
    """A download failed; nothing was left at the destination."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the published checksum."""


class HTMLInsteadOfDataError(DownloadError):
    """The server answered with a web page instead of the file."""


class TruncatedDownloadError(DownloadError):
    """The connection ended before all announced bytes arrived."""


def file_hash(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected(sha256: str | None, md5: str | None) -> tuple[str, str] | None:
    return ("sha256", sha256.lower()) if sha256 else ("md5", md5.lower()) if md5 else None


def verify_file(path: str | Path, *, sha256: str | None = None, md5: str | None = None) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the given SHA-256 (or MD5)."""
    exp = _expected(sha256, md5)
    if exp is None:
        return
    got = file_hash(path, exp[0])
    if got != exp[1]:
        raise ChecksumError(f"checksum mismatch for {path}: {exp[0]} is {got}, expected {exp[1]}. "
                            "The file is corrupt or not the published one; it was not kept.")


def looks_like_html(head: bytes, content_type: str = "") -> bool:
    """True for an HTML page (by Content-Type or by the first bytes)."""
    return ("text/html" in content_type.lower()
            or head.lstrip()[:64].lower().startswith((b"<!doctype html", b"<html", b"<head")))


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """One HTTP attempt that appends to ``part`` (resuming with Range when it exists)."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "mamlbook"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if have and e.code == 416:                     # the partial file is already complete
            return
        raise
    with resp:
        if have and getattr(resp, "status", 200) != 206:     # server ignored the range: restart
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        first = resp.read(_CHUNK)
        if looks_like_html(first, resp.headers.get("Content-Type", "")):
            part.unlink(missing_ok=True)
            raise HTMLInsteadOfDataError(
                f"{url} returned an HTML page instead of the file (a quota, login or error page; "
                f"it begins {first.lstrip()[:60]!r}). Nothing was saved. Open the URL in a browser "
                "to see why, or get the file another way and put it in place by hand.")
        with open(part, "ab" if have else "wb") as out, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, disable=not progress,
                     desc=part.name.removesuffix(".part"), leave=False) as bar:
            chunk = first
            while chunk:
                out.write(chunk)
                bar.update(len(chunk))
                try:
                    chunk = resp.read(_CHUNK)
                except http.client.IncompleteRead as e:   # server closed before Content-Length
                    out.write(e.partial)
                    chunk = b""
            out.flush()
            os.fsync(out.fileno())
    size = part.stat().st_size
    if total is not None and size < total:
        raise TruncatedDownloadError(f"{url}: connection closed after {size} of {total} bytes")


def download(url: str, dest: str | Path, *, sha256: str | None = None, md5: str | None = None,
             retries: int = 3, timeout: float = 30.0, backoff: float = 1.0,
             progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` safely and return ``dest``.

    Args:
        url: http(s) URL of the file.
        dest: final path; its folder is created. If it already exists with the right
            checksum, nothing is downloaded.
        sha256, md5: the published checksum (SHA-256 preferred; MD5 where that is all there is).
        retries: attempts in all; a broken connection resumes, a checksum mismatch restarts.
        timeout: seconds to wait for the server on each attempt.
        backoff: seconds before the second attempt, doubling after each failure.
        progress: show a tqdm progress bar.
    Raises:
        HTMLInsteadOfDataError, ChecksumError, TruncatedDownloadError, DownloadError.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and _expected(sha256, md5) is not None:
        with contextlib.suppress(ChecksumError):        # a stale or broken copy: fetch again
            verify_file(dest, sha256=sha256, md5=md5)
            return dest
    part = dest.with_name(dest.name + ".part")
    last: Exception | None = None
    try:
        for attempt in range(max(1, retries)):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                _fetch(url, part, timeout, progress)
                verify_file(part, sha256=sha256, md5=md5)
                os.replace(part, dest)                  # atomic on one file system
                return dest
            except HTMLInsteadOfDataError:
                raise                                   # a web page will not turn into data
            except ChecksumError as e:
                last = e
                part.unlink(missing_ok=True)            # restart from zero
            except (TruncatedDownloadError, urllib.error.URLError, http.client.HTTPException, OSError) as e:
                last = e                                # keep .part: the next attempt resumes
    except KeyboardInterrupt:
        raise                                           # keep .part so a rerun resumes
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.unlink(missing_ok=True)
    if isinstance(last, DownloadError):
        raise type(last)(f"{last} (gave up after {retries} attempts; nothing was saved at {dest}). Try again "
                         f"later, or download the file by hand and put it at {dest}.")
    reason = "; ".join(str(last).splitlines())
    raise DownloadError(f"could not download {url} after {retries} attempts: {reason}. "
                        f"Nothing was saved at {dest}. Check the connection, or download the file "
                        f"by hand and put it at {dest}.")
