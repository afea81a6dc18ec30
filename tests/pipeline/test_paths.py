"""Route matching sees the normalised path (tests/pipeline/test_paths.py for pipeline/paths.py)."""
from __future__ import annotations

import pytest

from appliance.pipeline.paths import PathEscapesRoot, normalise_path

CASES = [
    (b"/", "/"), (b"/admin", "/admin"), (b"/x/../admin", "/admin"), (b"//admin", "/admin"),
    (b"/./admin", "/admin"), (b"/static/%2e%2e/search", "/search"), (b"/static/%2E%2e/search", "/search"),
    (b"/%61dmin/", "/admin/"), (b"/a//b///c", "/a/b/c"), (b"/a/.", "/a/"), (b"/a/..", "/"),
    (b"/a/b/../../c", "/c"), (b"/a%2f..%2fb", "/b"), (b"/a%20b", "/a b"), (b"/caf%C3%A9", "/café"),
    (b"/a/...", "/a/..."), (b"/.hidden", "/.hidden"),
]


@pytest.mark.parametrize(("raw", "expected"), CASES, ids=[c[0].decode() for c in CASES])
def test_normalised_like_nginx_picks_a_location(raw: bytes, expected: str) -> None:
    assert normalise_path(raw) == expected


@pytest.mark.parametrize("raw", [b"/..", b"/../x", b"/%2e%2e/x", b"/a/../../x", b"/a/%2E%2E/%2e%2e"])
def test_climbing_above_the_root_is_refused(raw: bytes) -> None:
    with pytest.raises(PathEscapesRoot):
        normalise_path(raw)
