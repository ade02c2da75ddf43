"""Where the service is and which key to use: flags, then the environment, then what `make run` recorded.

`make run` writes `.data/dev.env` (lines NAME=value; SPATIALGEN_DATA_DIR moves .data), so the command works with
no flags next to a dev stack. Names are copies of the service's (tests keep them equal).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ENV_API_URL = "SPATIALGEN_API_URL"
ENV_API_KEY = "SPATIALGEN_API_KEY"
ENV_DATA_DIR = "SPATIALGEN_DATA_DIR"
DEFAULT_DATA_DIR = ".data"
DEV_ENV_FILE = "dev.env"


def dev_env_path(env: Mapping[str, str]) -> Path:
    """Where `make run` records what it started: `$SPATIALGEN_DATA_DIR/dev.env` (default `.data/dev.env`)."""
    return Path(env.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR) / DEV_ENV_FILE


def read_dev_env(path: Path) -> dict[str, str]:
    """The NAME=value lines of a dev.env file ({} when there is none)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    values = {}
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[name.strip()] = value.strip()
    return values


def resolve(
    api_url: str | None,
    api_key: str | None,
    env: Mapping[str, str] | None = None,
    *,
    recorded_url: str | None = None,
) -> tuple[str | None, str | None]:
    """The API URL and key: a flag wins, then a URL recorded in a state file, then the environment, then dev.env."""
    env = os.environ if env is None else env
    dev: dict[str, str] | None = None

    def from_dev(name: str) -> str | None:
        nonlocal dev
        if dev is None:
            dev = read_dev_env(dev_env_path(env))
        return dev.get(name) or None

    url = api_url or recorded_url or env.get(ENV_API_URL) or from_dev(ENV_API_URL)
    key = api_key or env.get(ENV_API_KEY) or from_dev(ENV_API_KEY)
    return url, key
