"""The uploader is its own install: the wheel built from this repo, installed without the `server` extra, pulls only
what the client needs and runs `spatialgen-upload`; the server's commands say which extra they need.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_LIBRARIES = ("litestar", "redis", "arq", "aiobotocore", "botocore", "granian", "prometheus_client", "hiredis")


def uv() -> str:
    return shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")


def run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], check=False, capture_output=True, text=True, timeout=300, env=env)


def test_the_uploader_installs_and_runs_without_the_servers_libraries(tmp_path: Path) -> None:
    built = run(uv(), "build", "--wheel", "--out-dir", tmp_path / "dist", ROOT)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("spatialgen_upload-*.whl"))
    venv = tmp_path / "venv"
    assert run(uv(), "venv", "--python", sys.executable, venv).returncode == 0
    python = venv / "bin" / "python"
    # From uv's cache when it holds the client's dependencies (it does after `make install`), else from PyPI.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    installed = run(uv(), "pip", "install", "--offline", "--python", python, wheel, env=env)
    if installed.returncode != 0:
        installed = run(uv(), "pip", "install", "--python", python, wheel, env=env)
    assert installed.returncode == 0, installed.stderr

    present = run(python, "-c", "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] "
                                "if u.find_spec(m)))", *SERVER_LIBRARIES)  # fmt: skip
    assert present.returncode == 0 and present.stdout.split() == [], present.stdout
    listed = run(uv(), "pip", "list", "--python", python, env=env)
    names = {line.split()[0].lower() for line in listed.stdout.splitlines()[2:]}
    assert {"spatialgen-upload", "httpx", "msgspec", "rich", "awscrt"} <= names
    assert not names & {"litestar", "redis", "arq", "aiobotocore", "botocore", "granian", "uvloop"}

    client = run(venv / "bin" / "spatialgen-upload", "--help")
    assert client.returncode == 0 and "send" in client.stdout, client.stderr
    api = run(python, "-c", "import app.client; from app.client import UploadClient, UploadSpec; print('ok')")
    assert api.stdout.strip() == "ok", api.stderr
    for command in ("spatialgen-api", "spatialgen-worker", "spatialgen-admin"):
        server = run(venv / "bin" / command)
        assert server.returncode == 2, (command, server.stderr)
        assert "pip install 'spatialgen-upload[server]'" in server.stderr and "Traceback" not in server.stderr
