"""Bundles as artifacts through the CLI: archives (and malicious ones), signatures, diff, export,
gc, per-domain activation and rollback."""
from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from appliance.bundles import import_bundle, store_for
from rules.errors import BundleSourceError

from ..conftest import CRS_DIR
from ..harness import EDGEWARD

RULES_V1 = """\
SecRule ARGS "@contains evil" "id:1001,phase:2,deny,status:403,msg:'evil argument'"
SecRule ARGS "@contains bad" "id:1002,phase:2,deny,status:403,msg:'bad argument'"
"""
RULES_V2 = """\
SecRule ARGS "@contains evil" "id:1001,phase:2,deny,status:403,msg:'evil argument'"
SecRule ARGS "@contains worse" "id:1002,phase:2,deny,status:403,msg:'worse argument'"
SecRule ARGS "@contains new" "id:1003,phase:2,deny,status:403,msg:'new rule'"
"""
SETUP = "SecAction \"id:900990,phase:1,pass,nolog,setvar:tx.crs_setup_version=400\"\n"


def tree(root: Path, rules: str, setup: str = SETUP) -> Path:
    (root / "rules").mkdir(parents=True)
    (root / "crs-setup.conf.example").write_text(setup)
    (root / "rules" / "REQUEST-901-LOCAL.conf").write_text(rules)
    return root


def make_tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGEWARD, "bundle", *args[:1], "-c", str(cfg), *args[1:]] if args[0] != "keygen"
                          else [EDGEWARD, "bundle", *args], capture_output=True, text=True)


@pytest.fixture()
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "edgeward.yaml"
    path.write_text(f"state_dir: {tmp_path}/state\ndomains:\n  - {{hosts: [a.test], upstream: 'http://127.0.0.1:9'}}\n")
    return path


def test_release_tarball_imports_with_plugins_and_extras(tmp_path: Path) -> None:
    src = tree(tmp_path / "coreruleset-4.0.0", RULES_V1)
    archive = tmp_path / "coreruleset-4.0.0-minimal.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="coreruleset-4.0.0")
    plugin = tmp_path / "fake-plugin" / "plugins"
    plugin.mkdir(parents=True)
    (plugin / "fake-config.conf").write_text('SecAction "id:9500010,phase:1,pass,nolog,setvar:tx.fake_plugin_enabled=1"\n')
    (plugin / "fake-before.conf").write_text('SecRule ARGS "@contains plugged" "id:9500100,phase:2,deny,status:403"\n')
    extra = tmp_path / "local.conf"
    extra.write_text('SecRule ARGS "@contains mine" "id:2001,phase:2,deny,status:403"\n')
    result = import_bundle(tmp_path / "state", archive, version="4.0.0", plugins=[str(tmp_path / "fake-plugin")],
                           extras=[str(extra)])
    m = result.manifest
    assert (m.ref, m.name, m.version) == ("coreruleset-4@4.0.0", "coreruleset-4", "4.0.0")
    assert m.load_order == ["crs-setup.conf", "plugins/fake-config.conf", "plugins/fake-before.conf",
                            "rules/REQUEST-901-LOCAL.conf", "extra/local.conf"]
    assert {1001, 1002, 2001, 9500100} <= set(m.rule_ids)


def test_include_and_exclude_globs(tmp_path: Path) -> None:
    src = tree(tmp_path / "src", RULES_V1)
    (src / "rules" / "RESPONSE-950-LEAKS.conf").write_text('SecRule RESPONSE_BODY "@contains x" "id:950001,phase:4,pass"\n')
    m = import_bundle(tmp_path / "state", src, exclude=["rules/RESPONSE-*"]).manifest
    assert "rules/RESPONSE-950-LEAKS.conf" not in m.files and 950001 not in m.rule_ids
    by_name = import_bundle(tmp_path / "state2", src, exclude=["RESPONSE-950-*"]).manifest  # the file name alone
    assert by_name.digest == m.digest
    with pytest.raises(BundleSourceError, match="match no file: REQUEST-942-"):
        import_bundle(tmp_path / "state3", src, exclude=["REQUEST-942-*"])
    with pytest.raises(BundleSourceError, match="match no file: nothing/\\*"):
        import_bundle(tmp_path / "state4", src, include=["nothing/*"])


MALICIOUS = [
    ("path traversal", {"../evil.conf": b"x"}, None, "escapes the archive"),
    ("absolute path", {"/etc/evil.conf": b"x"}, None, "absolute path"),
    ("symlink out of the tree", {"crs/rules/a.conf": b"SecRuleEngine On\n"}, {"crs/rules/passwd.data": "/etc/passwd"}, "is a link"),
    ("file over the cap", {"crs/rules/big.data": b"a" * (16 * 1024 * 1024 + 1)}, None, "larger than"),
]


@pytest.mark.parametrize(("case", "members", "links", "message"), MALICIOUS, ids=[m[0] for m in MALICIOUS])
def test_malicious_tarballs_are_refused_and_nothing_is_written(tmp_path: Path, case: str, members: dict[str, bytes],
                                                                links: dict[str, str] | None, message: str) -> None:
    archive = make_tar(tmp_path / "evil.tar.gz", members, links)
    with pytest.raises(BundleSourceError, match=message):
        import_bundle(tmp_path / "state", archive)
    assert store_for(tmp_path / "state").manifests() == []
    assert not (tmp_path / "evil.conf").exists()


def test_zip_bomb_and_truncated_archives_are_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("crs/rules/zero.data", b"\0" * (8 * 1024 * 1024))
    with pytest.raises(BundleSourceError, match="zip bomb"):
        import_bundle(tmp_path / "state", bomb)
    good = make_tar(tmp_path / "t.tar.gz", {"crs/rules/a.conf": RULES_V1.encode() * 50})
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(BundleSourceError, match="not a readable archive"):
        import_bundle(tmp_path / "state", truncated)
    assert store_for(tmp_path / "state").manifests() == []


def test_url_import_needs_https_and_a_pinned_sha256(tmp_path: Path) -> None:
    with pytest.raises(BundleSourceError, match="--sha256"):
        import_bundle(tmp_path / "state", "https://127.0.0.1:1/crs.tar.gz")
    with pytest.raises(BundleSourceError, match="only https"):
        import_bundle(tmp_path / "state", "http://127.0.0.1:1/crs.tar.gz", sha256="0" * 64)


def test_url_import_checks_the_digest(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    import hashlib
    import http.server
    import ssl
    import threading

    src = tree(tmp_path / "crs", RULES_V1)
    archive = tmp_path / "www" / "crs.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="crs")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(archive.parent))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*tls_files)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    old = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(tls_files[0])
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}/crs.tar.gz"
        with pytest.raises(BundleSourceError, match="sha256 is"):
            import_bundle(tmp_path / "state", url, sha256="0" * 64)
        good = hashlib.sha256(archive.read_bytes()).hexdigest()
        m = import_bundle(tmp_path / "state", url, sha256=good).manifest
        assert m.source == url and 1001 in m.rule_ids
    finally:
        server.shutdown()
        server.server_close()
        if old is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = old


def test_sign_verify_and_require_signature(tmp_path: Path, cfg: Path) -> None:
    src = tree(tmp_path / "src", RULES_V1)
    out = cli(cfg, "import", str(src), "--name", "local", "--version", "1")
    assert out.returncode == 0, out.stderr
    key = tmp_path / "keys" / "signer"
    key.parent.mkdir()
    assert cli(cfg, "keygen", "--out", str(key)).returncode == 0
    assert oct(key.stat().st_mode & 0o777) == "0o600" and Path(f"{key}.pub").is_file()
    assert cli(cfg, "verify", "local@1").returncode == 0  # unsigned, not required: files match
    strict = cfg.read_text() + f"rules: {{require_signature: true, trusted_keys: [{key}.pub]}}\n"
    cfg.write_text(strict)
    refused = cli(cfg, "activate", "local@1")
    assert refused.returncode == 1 and "not signed" in refused.stderr
    assert cli(cfg, "sign", "local@1", "--key", str(key)).returncode == 0
    assert cli(cfg, "verify", "local@1").returncode == 0
    assert cli(cfg, "activate", "local@1", "--reason", "signed").returncode == 0
    other = tmp_path / "keys" / "other"
    cli(cfg, "keygen", "--out", str(other))
    assert cli(cfg, "sign", "local@1", "--key", str(other)).returncode == 0
    untrusted = cli(cfg, "verify", "local@1")
    assert untrusted.returncode == 1 and "not trusted" in untrusted.stdout
    assert cli(cfg, "sign", "local@1", "--key", str(key)).returncode == 0
    bundle = next((tmp_path / "state" / "bundles").glob("*/manifest.json"))
    manifest = json.loads(bundle.read_text())
    manifest["version"] = "2"
    bundle.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")  # forged manifest
    forged = cli(cfg, "verify", manifest["digest"])
    assert forged.returncode == 1 and "bad signature" in forged.stdout


def test_diff_export_gc_rollback(tmp_path: Path, cfg: Path) -> None:
    v1 = tree(tmp_path / "v1", RULES_V1)
    v2 = tree(tmp_path / "v2", RULES_V2, SETUP.replace("400", "401"))
    d1 = cli(cfg, "import", str(v1), "--name", "local", "--version", "1").stdout.split()[1]
    d2 = cli(cfg, "import", str(v2), "--name", "local", "--version", "2").stdout.split()[1]
    diff = json.loads(cli(cfg, "diff", "local@1", "local@2", "--json").stdout)
    assert diff["added"] == {"1003": "new rule"} and diff["removed"] == {}
    assert diff["changed"] == {"1002": "worse argument", "900990": ""}  # the setup SecAction changed too
    assert diff["setup"] == {"crs_setup_version": ["400", "401"]}
    export = tmp_path / "local-1.tar.gz"
    assert cli(cfg, "export", "local@1", "--out", str(export)).returncode == 0
    elsewhere = import_bundle(tmp_path / "elsewhere", export).manifest
    assert elsewhere.digest == d1
    assert cli(cfg, "activate", "local@1").returncode == 0
    assert cli(cfg, "activate", "local@2", "--domain", "a.test", "--reason", "try v2").returncode == 0
    assert cli(cfg, "activate", "local@2").returncode == 0
    back = json.loads(cli(cfg, "rollback", "--json").stdout)
    assert back["digest"] == d1
    history = [json.loads(x) for x in cli(cfg, "history", "--json").stdout.splitlines()]
    assert [h["digest"] for h in history] == [d1, d2, d1] and history[-1]["reason"].startswith("rollback")
    dom = json.loads(cli(cfg, "rollback", "--domain", "a.test", "--json").stdout)
    assert dom["digest"] == ""  # back to the global bundle
    d3 = cli(cfg, "import", str(tree(tmp_path / "v3", RULES_V1.replace("evil", "vile"))), "--name", "local",
             "--version", "3").stdout.split()[1]
    gc = cli(cfg, "gc")
    assert gc.returncode == 0 and "removed local@3" in gc.stdout
    digests = {m.digest for m in store_for(tmp_path / "state").manifests()}
    assert digests == {d1, d2} and d3 not in digests


def test_debian_crs_exports_and_reimports_to_the_same_digest(tmp_path: Path) -> None:
    if not CRS_DIR.is_dir():
        pytest.skip(f"{CRS_DIR} is absent")
    m = import_bundle(tmp_path / "a", CRS_DIR).manifest
    cfg = tmp_path / "e.yaml"
    cfg.write_text(f"state_dir: {tmp_path}/a\ndomains:\n  - {{hosts: [a.test], upstream: 'http://127.0.0.1:9'}}\n")
    out = tmp_path / "crs.tar.gz"
    assert cli(cfg, "export", "crs@3.3.4", "--out", str(out)).returncode == 0
    assert import_bundle(tmp_path / "b", out).manifest.digest == m.digest
