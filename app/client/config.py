"""Where the service is and which key to use: flags, then the environment, then what `make run` recorded.

`make run` writes `.data/dev.env` (lines NAME=value; SPATIALGEN_DATA_DIR moves .data), so the command works with
no flags next to a dev stack. Names are copies of the service's (tests keep them equal).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Target:
    """The service to talk to, its key, and where each came from (for messages that say what to check)."""

    url: str | None
    key: str | None
    url_from: str = ""
    """`--api-url`, `SPATIALGEN_API_URL`, the dev.env path, or `the state file PATH`; empty when there is no URL."""
    key_from: str = ""

    def missing(self, dev_env: Path) -> str | None:
        """What to do when the URL or the key is missing (None when both are there)."""
        if not self.url:
            return (f"no API URL: pass --api-url or set {ENV_API_URL} (next to a running `make run`, both are read "
                    f"from the {dev_env} it writes; there is none in {Path.cwd()})")  # fmt: skip
        if not self.key:
            return (f"no API key for {self.url} (URL from {self.url_from}): pass --api-key or set {ENV_API_KEY} "
                    "(`spatialgen-admin keys create` makes one; `make run` prints one)")  # fmt: skip
        return None

    def url_hint(self) -> str:
        """What to check when nothing answers at the URL, given where it came from."""
        if self.url_from.endswith(DEV_ENV_FILE):
            return (f"the URL came from {self.url_from}, written by `make run`: is that stack still running? "
                    "(it removes the file when it stops; one left behind means it was killed) "
                    "Start it again, or pass --api-url")  # fmt: skip
        if self.url_from.startswith("the state file"):
            return (f"the URL is the one the upload started with ({self.url_from}): is that API running? If the "
                    "service moved, pass --api-url")  # fmt: skip
        return (f"the URL came from {self.url_from}: check it, and that the API runs there "
                "(in a checkout of the service, `make run` starts one)")  # fmt: skip


def locate(
    api_url: str | None,
    api_key: str | None,
    env: Mapping[str, str] | None = None,
    *,
    recorded_url: str | None = None,
    recorded_from: str = "the state file",
) -> Target:
    """The API URL and key: a flag wins, then a URL recorded in a state file, then the environment, then dev.env."""
    env = os.environ if env is None else env
    path = dev_env_path(env)
    dev: dict[str, str] | None = None

    def from_dev(name: str) -> str | None:
        nonlocal dev
        if dev is None:
            dev = read_dev_env(path)
        return dev.get(name) or None

    url_sources = (("--api-url", api_url), (recorded_from, recorded_url), (ENV_API_URL, env.get(ENV_API_URL)))
    key_sources = (("--api-key", api_key), (ENV_API_KEY, env.get(ENV_API_KEY)))
    url_from, url = next(((name, value) for name, value in url_sources if value), (str(path), None))
    key_from, key = next(((name, value) for name, value in key_sources if value), (str(path), None))
    url = url or from_dev(ENV_API_URL)
    key = key or from_dev(ENV_API_KEY)
    return Target(url, key, url_from if url else "", key_from if key else "")


def resolve(
    api_url: str | None,
    api_key: str | None,
    env: Mapping[str, str] | None = None,
    *,
    recorded_url: str | None = None,
) -> tuple[str | None, str | None]:
    """The API URL and key (see `locate`, which also says where they came from)."""
    target = locate(api_url, api_key, env, recorded_url=recorded_url)
    return target.url, target.key
