"""The Lua state scripts: read from app/state/lua/*.lua, rendered with our names, and bound to their contracts.

Each script declares its contract once, in its header, and both sides are generated from it:

    -- KEYS: state, group          Lua sees key.state, key.group; Python passes state=…, group=…
    -- ARGV: upload_id, now_ms     Lua sees arg.upload_id, arg.now_ms (strings)
    -- JOBS: purge, late_purge     an arq job each (3 KEYS + 4 ARGV); Lua sees jobs.purge; Python passes a JobSpec
    -- REST: upload_ids            the trailing ARGV, as the Lua list arg.upload_ids; Python passes a sequence
    -- JOBS: ...jobs               the whole call is a list of jobs, Lua's `jobs`; Python passes jobs=[JobSpec, …]

Placeholders such as `${field.status}`, `${file_status.completing}`, `${reply.ok}` or `${reason.group_failed}`
are replaced by the Python constants they name (hash fields, statuses, reply codes, reasons), so no name is
typed twice; an unknown placeholder or include fails when the scripts load,
and every process SCRIPT LOADs them all at start, so a broken script stops the process at boot.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from arq.constants import in_progress_key_prefix

from app.domain.events import EventType
from app.domain.lifecycle import LIVE_GROUP, OPEN_FILE, SETTLED_FILE, FileStatus, GroupStatus, Reply
from app.domain.reasons import Reason
from app.state.jobs import JobSpec
from app.state.keys import (
    LIBRARY_EPOCH_US,
    SETTLED_CHANNEL,
    Field,
    FileField,
    HandoffState,
    MetricField,
    arq_job_key,
    arq_result_key,
)

_HEADER = re.compile(r"^-- (KEYS|ARGV|JOBS|REST): *(.*)$", re.MULTILINE)
_INCLUDE = re.compile(r"^--! include (\w+)$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_.]+)\}")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
JOB_KEYS = ("key", "result", "queue")
JOB_ARGS = ("id", "blob", "expires", "score")


def _lua_set(name: str, members: frozenset[str]) -> str:
    return f"local {name} = {{{', '.join(f'[{_lua_str(m)}] = true' for m in sorted(members))}}}"


def _lua_str(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_:.-]*", value):
        raise ValueError(f"not a plain Lua name: {value!r}")
    return f"'{value}'"


def lua_names() -> dict[str, str]:
    """Every `${…}` placeholder a script may use, and the Lua literal it becomes."""
    names = {f"field.{k.lower()}": v for k, v in vars(Field).items() if k.isupper()}
    names |= {f"file_field.{k.lower()}": v for k, v in vars(FileField).items() if k.isupper()}
    names |= {f"group_status.{s.value}": s.value for s in GroupStatus}
    names |= {f"file_status.{s.value}": s.value for s in FileStatus}
    names |= {f"reply.{r.value}": r.value for r in Reply}
    names |= {f"reason.{r.value}": r.value for r in Reason}
    names |= {f"metric.{k.lower()}": v for k, v in vars(MetricField).items() if k.isupper()}
    names |= {f"handoff.{k.lower()}": v for k, v in vars(HandoffState).items() if k.isupper()}
    names |= {f"event.{e.name.lower()}": e.value for e in EventType}
    rendered = {k: _lua_str(v) for k, v in names.items()}
    rendered["number.library_epoch_us"] = str(LIBRARY_EPOCH_US)  # numbers stand bare
    rendered["arq.in_progress_prefix"] = _lua_str(in_progress_key_prefix)
    rendered["channel.settled"] = _lua_str(SETTLED_CHANNEL)
    return rendered


def _generated_libraries() -> dict[str, str]:
    """Includes built from Python: the lifecycle sets, so Lua's notion of "live" is Python's."""
    lines = [
        "-- generated from app/domain/lifecycle.py",
        _lua_set("LIVE_GROUP", frozenset(LIVE_GROUP)),
        _lua_set("OPEN_FILE", frozenset(OPEN_FILE)),
        _lua_set("SETTLED_FILE", frozenset(SETTLED_FILE)),
        "local function live(st) return LIVE_GROUP[st] == true end",
    ]
    return {"lifecycle": "\n".join(lines)}


@dataclass(frozen=True)
class Contract:
    """The KEYS/ARGV layout of a script, by name."""

    keys: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()
    rest: str | None = None
    job_list: bool = False
    """JOBS: ...name — the call is nothing but a list of jobs."""

    @classmethod
    def parse(cls, name: str, source: str) -> Contract:
        """Read the `-- KEYS:` / `-- ARGV:` / `-- JOBS:` / `-- REST:` header lines of a script."""
        fields: dict[str, tuple[str, ...]] = {}
        for kind, raw in _HEADER.findall(source):
            if kind in fields:
                raise ValueError(f"{name}.lua: {kind} declared twice")
            fields[kind] = tuple(x.strip() for x in raw.split(",") if x.strip())
        jobs = fields.get("JOBS", ())
        job_list = len(jobs) == 1 and jobs[0].startswith("...")
        rest = fields.get("REST", ())
        contract = cls(
            keys=fields.get("KEYS", ()), args=fields.get("ARGV", ()), jobs=() if job_list else jobs,
            rest=rest[0] if rest else None, job_list=job_list,
        )  # fmt: skip
        names = [*contract.keys, *contract.args, *contract.jobs, *rest]
        if len(rest) > 1 or (job_list and (contract.keys or contract.args or rest)):
            raise ValueError(f"{name}.lua: REST takes one name, and a job list stands alone")
        for n in names:
            if not _NAME.match(n):
                raise ValueError(f"{name}.lua: bad name {n!r} in its contract")
        if len(set(names)) != len(names):
            raise ValueError(f"{name}.lua: a name appears twice in its contract")
        return contract

    def prologue(self) -> str:
        """Lua locals giving the KEYS/ARGV entries their names."""
        nk, na = len(self.keys), len(self.args)
        lines = [
            "local key = {" + ", ".join(f"{k} = KEYS[{i}]" for i, k in enumerate(self.keys, 1)) + "}",
            "local arg = {" + ", ".join(f"{a} = ARGV[{i}]" for i, a in enumerate(self.args, 1)) + "}",
        ]
        if self.job_list:
            lines.append("local jobs = {}")
            lines.append("for i = 0, #KEYS / 3 - 1 do")
            lines.append("  jobs[#jobs + 1] = {" + ", ".join(
                [f"{k} = KEYS[3 * i + {j}]" for j, k in enumerate(JOB_KEYS, 1)]
                + [f"{a} = ARGV[4 * i + {j}]" for j, a in enumerate(JOB_ARGS, 1)]) + "}")  # fmt: skip
            lines.append("end")
        else:
            slots = []
            for n, job in enumerate(self.jobs):
                ks = [f"{k} = KEYS[{nk + 3 * n + j}]" for j, k in enumerate(JOB_KEYS, 1)]
                avs = [f"{a} = ARGV[{na + 4 * n + j}]" for j, a in enumerate(JOB_ARGS, 1)]
                slots.append(f"{job} = {{{', '.join(ks + avs)}}}")
            lines.append("local jobs = {" + ", ".join(slots) + "}")
        if self.rest:
            first = na + 4 * len(self.jobs) + 1
            lines.append(f"arg.{self.rest} = {{}}")
            lines.append(f"for i = {first}, #ARGV do arg.{self.rest}[#arg.{self.rest} + 1] = ARGV[i] end")
        return "\n".join(lines)

    def bind(self, script: str, values: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
        """KEYS and ARGV lists from named values; a missing or unknown name is a TypeError."""
        expected = {*self.keys, *self.args, *self.jobs, *([self.rest] if self.rest else [])}
        if self.job_list:
            expected = {"jobs"}
        if set(values) != expected:
            missing, extra = sorted(expected - set(values)), sorted(set(values) - expected)
            raise TypeError(f"{script}: missing {missing}, unknown {extra}")
        jobs: Sequence[JobSpec] = values["jobs"] if self.job_list else [values[j] for j in self.jobs]
        keys = [values[k] for k in self.keys]
        args = [values[a] for a in self.args]
        for job in jobs:
            keys += [arq_job_key(job.job_id), arq_result_key(job.job_id), job.queue]
            args += [job.job_id, job.blob, job.expires_ms, job.score_ms]
        if self.rest:
            args += list(values[self.rest])
        return keys, args


@dataclass(frozen=True)
class StateScript:
    """One rendered script: its name, Lua source, SHA1 and contract."""

    name: str
    source: str
    contract: Contract

    @property
    def sha(self) -> str:
        """The SHA1 Redis knows it by (EVALSHA)."""
        return hashlib.sha1(self.source.encode()).hexdigest()

    def bind(self, **values: Any) -> tuple[list[Any], list[Any]]:
        """KEYS and ARGV for a call (see Contract.bind)."""
        return self.contract.bind(self.name, values)


def render(name: str, source: str, libraries: Mapping[str, str]) -> StateScript:
    """Resolve includes and placeholders and put the contract's prologue first."""
    contract = Contract.parse(name, source)

    def include(match: re.Match[str]) -> str:
        lib = match.group(1)
        if lib not in libraries:
            raise ValueError(f"{name}.lua includes unknown library {lib!r}")
        return libraries[lib]

    names = lua_names()

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in names:
            raise ValueError(f"{name}.lua uses unknown name ${{{key}}}")
        return names[key]

    body = _PLACEHOLDER.sub(substitute, _INCLUDE.sub(include, source))
    if "${" in body:
        raise ValueError(f"{name}.lua has a malformed placeholder")
    return StateScript(name, contract.prologue() + "\n" + body, contract)


@functools.cache
def all_scripts() -> dict[str, StateScript]:
    """Every state script by name (file stem), rendered once per process."""
    folder = resources.files("app.state").joinpath("lua")
    libraries = _generated_libraries()
    for entry in folder.joinpath("lib").iterdir():
        if entry.name.endswith(".lua"):
            libraries[entry.name.removesuffix(".lua")] = entry.read_text()
    scripts = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".lua"):
            name = entry.name.removesuffix(".lua")
            scripts[name] = render(name, entry.read_text(), libraries)
    return scripts
