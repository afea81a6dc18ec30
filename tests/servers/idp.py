"""A real OpenID provider (the npm package oidc-provider, pinned in tests/oidc/package.json) on a
free loopback port; ``make test`` installs it (npm ci)."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..harness import free_port, wait_port

DIR = Path(__file__).resolve().parent.parent / "oidc"
CLIENT_SECRET = "edgeward-client-secret"


@dataclass
class IdP:
    port: int
    proc: subprocess.Popen[bytes] | None
    redirect_uri: str
    post_logout_uri: str
    access_ttl: int

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(["node", str(DIR / "idp.js"), str(self.port), self.redirect_uri, self.post_logout_uri],
                                     env={**os.environ, "ACCESS_TTL": str(self.access_ttl)}, cwd=DIR,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def available() -> str | None:
    """Why the provider cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is absent (Debian package nodejs)"
    if not (DIR / "node_modules" / "oidc-provider").is_dir():
        return f"oidc-provider is not installed in {DIR} (make test runs npm ci there)"
    return None


def start_idp(redirect_uri: str, post_logout_uri: str, access_ttl: int = 3600) -> IdP:
    idp = IdP(free_port(), None, redirect_uri, post_logout_uri, access_ttl)
    idp.start()
    return idp
