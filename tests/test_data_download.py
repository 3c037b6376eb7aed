"""mamlbook.data.download against a local HTTP server on 127.0.0.1 serving generated files."""
import hashlib
import os

import pytest
from data_fixtures import SMALL1, SMALL2, local_server, needs_omniglot

from mamlbook.data import (
    ChecksumError,
    HTMLInsteadOfDataError,
    TruncatedDownloadError,
    download,
    download_omniglot_small,
)

BODY = os.urandom(300_000)                       # bigger than one read chunk, so resuming matters
SHA = hashlib.sha256(BODY).hexdigest()
HTML = b"<!DOCTYPE html><html><head><title>Quota exceeded</title></head><body>Too many users</body></html>"
FAST = dict(retries=2, backoff=0, timeout=5, progress=False)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_good_file_is_downloaded_and_checked(tmp_path):
    with local_server({"/f.bin": ("ok", BODY)}) as (url, _):
        path = download(f"{url}/f.bin", tmp_path / "f.bin", sha256=SHA, **FAST)
    assert path.read_bytes() == BODY
    assert leftovers(tmp_path) == ["f.bin"]


def test_md5_is_accepted_where_it_is_all_that_is_published(tmp_path):
    with local_server({"/f.bin": ("ok", BODY)}) as (url, _):
        download(f"{url}/f.bin", tmp_path / "f.bin", md5=hashlib.md5(BODY).hexdigest(), **FAST)
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_existing_good_file_is_not_downloaded_again(tmp_path):
    (tmp_path / "f.bin").write_bytes(BODY)
    with local_server({"/f.bin": ("ok", BODY)}) as (url, log):
        download(f"{url}/f.bin", tmp_path / "f.bin", sha256=SHA, **FAST)
    assert log == []


def test_corrupt_file_is_rejected_and_nothing_left(tmp_path):
    corrupt = bytearray(BODY)
    corrupt[1000] ^= 0xFF
    with local_server({"/f.bin": ("ok", bytes(corrupt))}) as (url, log):
        with pytest.raises(ChecksumError, match="checksum mismatch"):
            download(f"{url}/f.bin", tmp_path / "f.bin", sha256=SHA, **FAST)
    assert len(log) == 2                               # retried once from scratch
    assert leftovers(tmp_path) == []


def test_html_page_instead_of_data_is_named_and_nothing_left(tmp_path):
    with local_server({"/f.bin": ("html", HTML)}) as (url, log):
        with pytest.raises(HTMLInsteadOfDataError, match="HTML page instead of the file"):
            download(f"{url}/f.bin", tmp_path / "f.bin", sha256=SHA, **FAST)
    assert len(log) == 1                               # a web page is not retried
    assert leftovers(tmp_path) == []


def test_html_is_detected_by_content_even_with_a_binary_content_type(tmp_path):
    with local_server({"/f.bin": ("ok", HTML)}) as (url, _):
        with pytest.raises(HTMLInsteadOfDataError):
            download(f"{url}/f.bin", tmp_path / "f.bin", **FAST)
    assert leftovers(tmp_path) == []


def test_truncated_download_is_rejected_and_nothing_left(tmp_path):
    with local_server({"/f.bin": ("truncate", BODY)}) as (url, _):
        with pytest.raises(TruncatedDownloadError, match="of 300000 bytes"):
            download(f"{url}/f.bin", tmp_path / "f.bin", sha256=SHA, **FAST)
    assert leftovers(tmp_path) == []


def test_broken_connection_resumes_with_a_range_request(tmp_path):
    with local_server({"/f.bin": ("flaky", BODY)}) as (url, log):
        download(f"{url}/f.bin", tmp_path / "f.bin", sha256=SHA, **FAST)
    assert (tmp_path / "f.bin").read_bytes() == BODY
    assert log == [("/f.bin", None), ("/f.bin", f"bytes={len(BODY) // 2}-")]


def test_server_without_range_support_restarts_from_zero(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(b"stale partial bytes")
    with local_server({"/f.bin": ("norange", BODY)}) as (url, log):
        download(f"{url}/f.bin", tmp_path / "f.bin", sha256=SHA, **FAST)
    assert (tmp_path / "f.bin").read_bytes() == BODY
    assert log == [("/f.bin", "bytes=19-")]
    assert leftovers(tmp_path) == ["f.bin"]


@needs_omniglot
def test_omniglot_small_zips_pass_their_published_sha256(tmp_path):
    routes = {f"/{p.name}": ("ok", p.read_bytes()) for p in (SMALL1, SMALL2)}
    with local_server(routes) as (url, _):
        a, b = download_omniglot_small(tmp_path, base_url=url, **FAST)
    assert a == tmp_path / "omniglot" / "images_background_small1.zip"
    assert a.read_bytes() == SMALL1.read_bytes() and b.read_bytes() == SMALL2.read_bytes()


def test_a_complete_partial_file_is_verified_and_moved_into_place(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(BODY)        # e.g. killed between download and rename
    with local_server({"/f.bin": ("ok", BODY)}) as (url, log):
        download(f"{url}/f.bin", tmp_path / "f.bin", sha256=SHA, **FAST)
    assert log == [("/f.bin", f"bytes={len(BODY)}-")]
    assert (tmp_path / "f.bin").read_bytes() == BODY and leftovers(tmp_path) == ["f.bin"]
