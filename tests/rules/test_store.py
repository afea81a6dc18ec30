"""Bundle import, content digest, verification and activation history."""
from __future__ import annotations

from pathlib import Path

import pytest

from appliance.bundles import activations_for, import_bundle, store_for
from rules.errors import BundleCompileError, BundleCorrupt, BundleNotFound

from ..conftest import CRS_DIR


@pytest.fixture()
def crs_dir() -> Path:
    if not CRS_DIR.is_dir():
        pytest.skip(f"{CRS_DIR} is absent (Debian package modsecurity-crs)")
    return CRS_DIR


def test_debian_crs_imports_as_crs_334_with_910_left_out(tmp_path: Path, crs_dir: Path) -> None:
    result = import_bundle(tmp_path, crs_dir)
    m = result.manifest
    assert m.ref == "crs@3.3.4" and len(m.digest) == 64 and result.new
    assert "crs-setup.conf" in m.files and m.load_order[0] == "crs-setup.conf"
    assert "rules/REQUEST-910-IP-REPUTATION.conf" in result.excluded
    assert "GeoIP" in result.excluded["rules/REQUEST-910-IP-REPUTATION.conf"]
    assert 942100 in m.rule_ids and m.rule_count > 500
    assert m.engine.startswith("ModSecurity v3.0.")


def test_identical_content_imports_to_the_same_digest(tmp_path: Path, crs_dir: Path) -> None:
    first = import_bundle(tmp_path / "a", crs_dir).manifest
    again = import_bundle(tmp_path / "a", crs_dir)
    elsewhere = import_bundle(tmp_path / "b", crs_dir).manifest
    assert again.manifest.digest == first.digest == elsewhere.digest and not again.new


def test_a_bundle_that_does_not_compile_is_refused_with_the_parser_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "bad.conf").write_text('SecRule ARGS "@rx x" "id:1,phase:2,bogusaction"\n')
    with pytest.raises(BundleCompileError, match="Expecting an action"):
        import_bundle(tmp_path / "state", src)
    assert store_for(tmp_path / "state").manifests() == []


def test_tampered_bundle_is_detected_and_refused_at_load(tmp_path: Path, crs_dir: Path) -> None:
    m = import_bundle(tmp_path, crs_dir).manifest
    store = store_for(tmp_path)
    store.verify(m)
    rule = store.path(m) / "rules" / "REQUEST-942-APPLICATION-ATTACK-SQLI.conf"
    rule.write_text(rule.read_text().replace("id:942100", "id:942999"))
    with pytest.raises(BundleCorrupt, match="REQUEST-942-APPLICATION-ATTACK-SQLI.conf: content changed"):
        store.verify(m)


def test_activation_history_and_resolution(tmp_path: Path, crs_dir: Path) -> None:
    m = import_bundle(tmp_path, crs_dir).manifest
    activations = activations_for(tmp_path)
    assert activations.active() is None
    activations.activate(m.digest, m.ref, reason="first")
    activations.activate(m.digest, m.ref, scope="shop.example.com", reason="pin")
    assert activations.active().reason == "first"  # type: ignore[union-attr]
    assert [a.reason for a in activations.history("shop.example.com")] == ["pin"]
    store = store_for(tmp_path)
    assert store.resolve("crs@3.3.4").digest == m.digest == store.resolve(m.digest[:16]).digest
    with pytest.raises(BundleNotFound):
        store.resolve("crs@9.9.9")


def test_cli_import_activate_list(tmp_path: Path, crs_dir: Path) -> None:
    import subprocess

    from ..harness import EDGEWARD

    cfg = tmp_path / "e.yaml"
    cfg.write_text(f"state_dir: {tmp_path}/state\ndomains:\n  - {{hosts: [a.test], upstream: 'http://127.0.0.1:1', waf: {{mode: block}}}}\n")
    out = subprocess.run([EDGEWARD, "bundle", "import", "-c", str(cfg), str(crs_dir)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    ref, digest = out.stdout.split()[:2]
    assert ref == "crs@3.3.4" and len(digest) == 64
    assert "REQUEST-910-IP-REPUTATION.conf left out" in out.stderr
    assert subprocess.run([EDGEWARD, "check", "-c", str(cfg)], capture_output=True).returncode == 2
    act = subprocess.run([EDGEWARD, "bundle", "activate", "-c", str(cfg), "crs@3.3.4", "--reason", "t"], capture_output=True, text=True)
    assert act.returncode == 0, act.stderr
    assert subprocess.run([EDGEWARD, "check", "-c", str(cfg)], capture_output=True).returncode == 0
    listing = subprocess.run([EDGEWARD, "bundle", "list", "-c", str(cfg), "--json"], capture_output=True, text=True).stdout
    assert '"active": true' in listing and digest in listing


def test_concurrent_activations_keep_the_history_consistent(tmp_path: Path) -> None:
    import json
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_activate_many, args=(str(tmp_path), i)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    history = json.loads((tmp_path / "activations.json").read_text())["global"]
    assert len(history) == 6 * 20
    assert sorted(e["reason"] for e in history) == sorted(f"{i}-{n}" for i in range(6) for n in range(20))


def _activate_many(root: str, worker: int) -> None:
    from rules.activation import Activations

    activations = Activations(Path(root))
    for n in range(20):
        activations.activate("d" * 64, "x@1", reason=f"{worker}-{n}")


def test_identical_content_under_a_new_name_is_an_alias_with_that_name(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "local.conf").write_text('SecRule ARGS "@streq evil" "id:1001,phase:2,deny,status:403"\n')
    first = import_bundle(tmp_path / "state", src, "local", "1").manifest
    alias = import_bundle(tmp_path / "state", src, "mine", "7")
    assert not alias.new and alias.manifest.ref == "mine@7" and alias.manifest.digest == first.digest
    store = store_for(tmp_path / "state")
    assert store.resolve("mine@7").digest == store.resolve("local@1").digest == first.digest
    assert {m.ref for m in store.manifests()} == {"local@1", "mine@7"}
    assert store.resolve(first.digest).ref == "local@1"  # by digest: the bundle's own manifest


def test_concurrent_imports_each_keep_the_reference_they_report(tmp_path: Path) -> None:
    import concurrent.futures

    src = tmp_path / "src"
    src.mkdir()
    (src / "local.conf").write_text('SecRule ARGS "@streq evil" "id:1001,phase:2,deny,status:403"\n')
    with concurrent.futures.ProcessPoolExecutor(3) as pool:
        results = list(pool.map(_import, [(tmp_path / "state", src, str(v)) for v in range(3)]))
    store = store_for(tmp_path / "state")
    assert sorted(ref for ref, _ in results) == ["local@0", "local@1", "local@2"]
    assert sum(new for _, new in results) == 1  # one import stored it; the others found it there
    for ref, _ in results:
        assert store.resolve(ref).ref == ref


def _import(args: tuple[Path, Path, str]) -> tuple[str, bool]:
    state, src, version = args
    result = import_bundle(state, src, "local", version)
    return result.manifest.ref, result.new


def _two_file_bundle(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.conf").write_text('SecRule ARGS "@streq evil" "id:1001,phase:2,deny,status:403"\n')
    (src / "b.conf").write_text('SecRule ARGS "@streq bad" "id:1002,phase:2,deny,status:403"\n')
    return src


def test_the_digest_covers_the_load_order(tmp_path: Path) -> None:
    """An unsigned bundle whose load order is changed on disk no longer verifies."""
    import json

    m = import_bundle(tmp_path / "state", _two_file_bundle(tmp_path)).manifest
    store = store_for(tmp_path / "state")
    store.verify(m)
    path = store.path(m) / "manifest.json"
    data = json.loads(path.read_text())
    assert data["digest_format"] == 2
    data["load_order"] = list(reversed(data["load_order"]))
    path.write_text(json.dumps(data))
    with pytest.raises(BundleCorrupt, match="does not match its file list and load order"):
        store.verify(store.resolve(m.digest))


def test_bundles_imported_before_format_2_still_verify(tmp_path: Path) -> None:
    import json

    from rules.manifest import content_digest

    m = import_bundle(tmp_path / "state", _two_file_bundle(tmp_path)).manifest
    store = store_for(tmp_path / "state")
    old_digest = content_digest(m.files)  # format 1: files only
    data = json.loads((store.path(m) / "manifest.json").read_text())
    del data["digest_format"]
    data["digest"] = old_digest
    (store.path(m) / "manifest.json").write_text(json.dumps(data))
    store.path(m).rename(store.root / old_digest)
    legacy = store.resolve(old_digest)
    assert legacy.digest_format == 1
    store.verify(legacy)


def test_compiles_come_from_a_verified_private_copy(tmp_path: Path) -> None:
    """What the engine compiles is what was checked: a file changed in the store after the
    manifest was read is refused, and the copy is gone afterwards."""
    m = import_bundle(tmp_path / "state", _two_file_bundle(tmp_path)).manifest
    store = store_for(tmp_path / "state")
    with store.verified_copy(m) as copy:
        assert sorted(m.files) == ["rules/a.conf", "rules/b.conf"]
        for rel in m.files:
            assert (copy / rel).read_bytes() == (store.path(m) / rel).read_bytes()
        assert oct(copy.stat().st_mode & 0o777) == "0o700"
    assert not copy.exists()
    (store.path(m) / "rules" / "b.conf").write_text('SecRule ARGS "@streq bad" "id:1002,phase:2,pass"\n')
    with pytest.raises(BundleCorrupt, match="b.conf: content changed"):
        with store.verified_copy(m):
            pass
