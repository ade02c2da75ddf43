"""Where the service is and which key to use: flags, then the environment, then what `make run` recorded.

`make run` writes `.data/dev.env` (lines NAME=value; SPATIALGEN_DATA_DIR moves .data), so the command works with
no flags next to a dev stack. Names are copies of the service's (tests keep them equal).

Two rules keep the key where it belongs. It is read from the environment, a private file or dev.env, never from a
command-line argument (`ps` and shell history show those). It is only sent to a URL configured for this run: a
state file's URL is checked against that one, never used in its place (a state file can be old, shared or edited).
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.client.errors import ConfigError

ENV_API_URL = "SPATIALGEN_API_URL"
ENV_API_KEY = "SPATIALGEN_API_KEY"
ENV_DATA_DIR = "SPATIALGEN_DATA_DIR"
DEFAULT_DATA_DIR = ".data"
DEV_ENV_FILE = "dev.env"
URL_FLAG = "--api-url"
KEY_FILE_FLAG = "--api-key-file"
KEY_FILE_MAX_BYTES = 4096
"""A key is 47 characters; a bigger file is the wrong file (and is not read whole)."""
KEY_ARGUMENT_REFUSED = (
    "--api-key is not accepted: a key given as an argument is shown to other users by `ps` and kept in shell "
    f"history. Set {ENV_API_KEY}, or put the key in a file only you can read (chmod 600) and pass {KEY_FILE_FLAG} "
    "PATH. If the key is in your shell history now, consider revoking it (spatialgen-admin keys revoke KEY_ID)"
)


class _Refused(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        parser.error(KEY_ARGUMENT_REFUSED)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options for the URL and the key; `--api-key` is refused (exit 2) as soon as it is parsed."""
    parser.add_argument(URL_FLAG, metavar="URL", help="base URL of the API (default: SPATIALGEN_API_URL or "
                        ".data/dev.env); the key is sent nowhere else, whatever a state file records")  # fmt: skip
    parser.add_argument(KEY_FILE_FLAG, type=Path, metavar="PATH", help="file holding the API key, readable by you "
                        "alone (default: SPATIALGEN_API_KEY or .data/dev.env)")  # fmt: skip
    # Refused rather than unknown: said plainly, and never taken by argparse as an abbreviation of --api-key-file
    # (which would read the key as a path, and could print it).
    parser.add_argument("--api-key", action=_Refused, nargs="?", help=argparse.SUPPRESS)  # alone too


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


def read_key_file(path: Path) -> str:
    """The API key held in a file only its owner can read or write; ConfigError otherwise (never quoting it)."""
    path = path.expanduser()
    try:
        with open(path, "rb") as fh:
            mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
            # As ssh does with private keys: any access for group or others refuses the file. A key others can
            # read is no longer secret; one they can write can be swapped for theirs, sending the uploads to their
            # account. (Windows has no such bits: its st_mode says 0666 for any file, its ACLs are another matter.)
            if mode & 0o077 and os.name == "posix":
                raise ConfigError(
                    f"the API key file {path} is open to other users (mode {mode:04o}); make it yours alone: "
                    f"chmod 600 {path}"
                )
            raw = fh.read(KEY_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {path} ({KEY_FILE_FLAG}): {exc.strerror}") from None
    words = raw.decode("utf-8", errors="replace").split()
    if len(raw) > KEY_FILE_MAX_BYTES or len(words) != 1:
        what = "is empty" if not words else "holds more than one key"
        raise ConfigError(f"the API key file {path} {what}: it should hold the key alone (sgk_…) on one line")
    return words[0]


def same_url(a: str, b: str) -> bool:
    """True when two base URLs name the same service (case and a trailing slash aside)."""
    return a.rstrip("/").casefold() == b.rstrip("/").casefold()


@dataclass(frozen=True)
class Target:
    """The service to talk to, its key, and where each came from (for messages that say what to check)."""

    url: str | None
    key: str | None
    url_from: str = ""
    """`--api-url`, `SPATIALGEN_API_URL` or the dev.env path; empty when there is no URL."""
    key_from: str = ""
    note: str = ""
    """Something the user should know before the run (a state file's URL that --api-url replaced)."""

    def missing(self, dev_env: Path) -> str | None:
        """What to do when the URL or the key is missing (None when both are there)."""
        if not self.url:
            return (f"no API URL: pass {URL_FLAG} or set {ENV_API_URL} (next to a running `make run`, both are read "
                    f"from the {dev_env} it writes; there is none in {Path.cwd()})")  # fmt: skip
        if not self.key:
            return (f"no API key for {self.url} (URL from {self.url_from}): set {ENV_API_KEY}, or pass "
                    f"{KEY_FILE_FLAG} PATH naming a file only you can read (`spatialgen-admin keys create` makes a "
                    "key; `make run` prints one)")  # fmt: skip
        return None

    def url_hint(self) -> str:
        """What to check when nothing answers at the URL, given where it came from."""
        if self.url_from.endswith(DEV_ENV_FILE):
            return (f"the URL came from {self.url_from}, written by `make run`: is that stack still running? "
                    f"(it removes the file when it stops; one left behind means it was killed) "
                    f"Start it again, or pass {URL_FLAG}")  # fmt: skip
        return (f"the URL came from {self.url_from}: check it, and that the API runs there "
                "(in a checkout of the service, `make run` starts one)")  # fmt: skip


def locate(
    api_url: str | None,
    env: Mapping[str, str] | None = None,
    *,
    api_key_file: Path | None = None,
    recorded_url: str | None = None,
    recorded_from: str = "the state file",
) -> Target:
    """The API URL and key: a flag wins, then the environment, then dev.env; ConfigError when they cannot be used.

    `recorded_url` is the URL a state file holds. It is never where the key goes: the configured URL must agree
    with it, unless the URL was named on the command line for this very run (then that one is used).
    """
    env = os.environ if env is None else env
    path = dev_env_path(env)
    dev: dict[str, str] | None = None

    def from_dev(name: str) -> str | None:
        nonlocal dev
        if dev is None:
            dev = read_dev_env(path)
        return dev.get(name) or None

    url_from, url = next(((name, value) for name, value in ((URL_FLAG, api_url), (ENV_API_URL, env.get(ENV_API_URL)))
                          if value), (str(path), None))  # fmt: skip
    url = url or from_dev(ENV_API_URL)
    note = ""
    if recorded_url and not (url and same_url(url, recorded_url)):
        if url_from != URL_FLAG:
            raise ConfigError(_unconfigured(recorded_url, recorded_from, url, url_from))
        note = f"{recorded_from} records {recorded_url}; using {url} from {URL_FLAG}"
    key: str | None
    if api_key_file is not None:
        key_from, key = f"{KEY_FILE_FLAG} {api_key_file}", read_key_file(api_key_file)
    elif env.get(ENV_API_KEY):
        key_from, key = ENV_API_KEY, env[ENV_API_KEY]
    else:
        key_from, key = str(path), from_dev(ENV_API_KEY)
    return Target(url, key, url_from if url else "", key_from if key else "", note)


def _unconfigured(recorded_url: str, recorded_from: str, url: str | None, url_from: str) -> str:
    """Why a state file's URL is not used: no URL is configured, or another one is."""
    if url is None:
        return (f"{recorded_from} records the API URL {recorded_url}, and no URL is configured for this run "
                f"({URL_FLAG}, {ENV_API_URL}, or {url_from} written by `make run`). The API key is only sent to a URL "
                f"named for the run: to continue there, add {URL_FLAG} {recorded_url}")  # fmt: skip
    return (f"{recorded_from} records the API URL {recorded_url}, but {url_from} gives {url}. The API key is only "
            f"sent to the configured URL, and the upload started at the other: add {URL_FLAG} {recorded_url} to "
            f"continue where it started, or {URL_FLAG} {url} if the service moved there")  # fmt: skip
