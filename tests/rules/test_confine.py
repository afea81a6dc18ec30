"""A bundle may only use files inside itself (tests/rules/test_confine.py for rules/confine.py and
the archive include check in rules/importer.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from appliance.bundles import import_bundle, store_for
from rules.errors import BundleSourceError

from .test_lifecycle import RULES_V1, make_tar

OUTSIDE = [
    ("absolute @pmFromFile", 'SecRule ARGS "@pmFromFile /etc/passwd" "id:3001,phase:2,deny"\n', "absolute path"),
    ("@pmf with ..", 'SecRule ARGS "@pmf ok.data ../../x.data" "id:3002,phase:2,deny"\n', "leaves the bundle"),
    ("@ipMatchFromFile URL", 'SecRule REMOTE_ADDR "@ipMatchFromFile https://example.invalid/ips" "id:3003,phase:1,deny"\n',
     "a URL"),
    ("Include of a host file", "Include /etc/modsecurity/other.conf\n", "absolute path"),
    ("SecRemoteRules", "SecRemoteRules key https://example.invalid/rules\n", "fetches rules"),
    ("SecGeoLookupDb", "SecGeoLookupDb /usr/share/GeoIP/GeoLite2-Country.mmdb\n", "absolute path"),
]


@pytest.mark.parametrize(("case", "rule", "message"), OUTSIDE, ids=[o[0] for o in OUTSIDE])
def test_rules_naming_files_outside_the_bundle_are_refused(tmp_path: Path, case: str, rule: str,
                                                           message: str) -> None:
    archive = make_tar(tmp_path / "b.tar.gz", {"crs/rules/a.conf": (RULES_V1 + rule).encode(),
                                               "crs/rules/ok.data": b"x\n"})
    with pytest.raises(BundleSourceError, match=message):
        import_bundle(tmp_path / "state", archive)
    assert store_for(tmp_path / "state").manifests() == []


def test_relative_data_files_and_commented_examples_are_fine(tmp_path: Path) -> None:
    rules = RULES_V1 + ('SecRule ARGS "@pmFromFile ok.data" "id:3010,phase:2,deny,status:403"\n'
                        '# SecRule ARGS "@pmFromFile /etc/passwd" "id:3011,phase:2,deny"\n')
    archive = make_tar(tmp_path / "b.tar.gz", {"crs/rules/a.conf": rules.encode(), "crs/rules/ok.data": b"x\n"})
    assert 3010 in import_bundle(tmp_path / "state", archive).manifest.rule_ids


def test_an_archive_cannot_include_host_files(tmp_path: Path) -> None:
    """``owasp-crs.load`` in an archive may only include the archive's own files: an absolute include
    would copy host files into the store (and the export API would hand them out)."""
    host = tmp_path / "host-secrets"
    host.mkdir()
    (host / "secret.conf").write_text('SecAction "id:3999,phase:1,pass,msg:\'host file\'"\n')
    load = f"IncludeOptional {host}/*.conf\nInclude rules/*.conf\n".encode()
    archive = make_tar(tmp_path / "b.tar.gz", {"crs/owasp-crs.load": load, "crs/rules/a.conf": RULES_V1.encode()})
    with pytest.raises(BundleSourceError, match="outside the archive"):
        import_bundle(tmp_path / "state", archive)
    assert store_for(tmp_path / "state").manifests() == []
