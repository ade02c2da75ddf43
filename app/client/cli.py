"""`spatialgen-upload`: send an asset set, resume it, show its status, cancel it.

A thin shell over UploadClient: parses options, picks a progress renderer, maps outcomes to exit codes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from app.client import checksums, config
from app.client.api import DEFAULT_PARALLEL
from app.client.errors import (
    ChecksumMismatch,
    ConfigError,
    InvalidUpload,
    LocalFileChanged,
    ServiceError,
    ServiceUnreachable,
    StateFileError,
    UploadError,
)
from app.client.events import Event, Failed, GroupStarted, Interrupted, Reporter
from app.client.helptext import DESCRIPTION, EPILOG, PROG
from app.client.progress import JsonLines, PlainLines, RichBars, human_bytes
from app.client.run import UploadResult
from app.client.spec import ROLES, LocalFile, UploadSpec
from app.client.state import STATE_DIR, load_state, remove_state, save_state, state_path
from app.client.upload import UploadClient

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
T = TypeVar("T")


class Usage(Exception):
    """A usage error found after parsing (exit 2)."""


def _file_args(parser: argparse.ArgumentParser) -> None:
    files = parser.add_argument_group("files (audio and subtitle take LANG=PATH, e.g. en=english.mp4)")
    files.add_argument("--video", action="append", default=[], metavar="PATH", help="main video (.mp4 .mov .aivu)")
    files.add_argument("--video-left", action="append", default=[], metavar="PATH", help="left eye (Separate)")
    files.add_argument("--video-right", action="append", default=[], metavar="PATH", help="right eye (Separate)")
    files.add_argument("--audio", action="append", default=[], metavar="LANG=PATH", help="audio track (.mp4 .m4a)")
    files.add_argument("--subtitle", action="append", default=[], metavar="LANG=PATH", help="subtitles (.srt)")
    files.add_argument("--aime", action="append", default=[], metavar="PATH", help="Apple Immersive metadata")
    files.add_argument("--fcpxmld", action="append", default=[], metavar="PATH", help="Final Cut bundle (.zip)")


def _common_args(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON document or event per line on stdout")
    parser.add_argument("--state", type=Path, metavar="PATH", help="the state file (default: STATE_DIR/SESSION.json)")
    parser.add_argument("--state-dir", type=Path, default=Path(STATE_DIR), metavar="DIR",
                        help=f"folder of state files (default: {STATE_DIR})")  # fmt: skip


def _keep_state_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-state", action="store_true",
                        help="keep the state file once the group completes (default: it is removed)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The command's options."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{send,resume,status,cancel}")
    send = sub.add_parser("send", help="create a group and upload its files", description=DESCRIPTION,
                          epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    send.add_argument("--name", required=True, help="videoName of the group")
    send.add_argument("--layout", required=True, help="2D, MVHEVC, SBS, TB, Separate or AIV")
    send.add_argument("--perspective", help="Regular, 180 or 360")
    send.add_argument("--folder", help="folderName")
    send.add_argument("--description", help="description")
    _file_args(send)
    send.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, metavar="N",
                      help=f"parts in flight across all files (default {DEFAULT_PARALLEL})")  # fmt: skip
    send.add_argument("--new", action="store_true", help="always create a new group, even for the same inputs")
    send.add_argument("--checksum", choices=checksums.CHOICES, default=checksums.DEFAULT, metavar="ALGORITHM",
                      help=f"checksum of every part and of each whole file, verified by storage: "
                      f"{', '.join(checksums.CHOICES)} (default {checksums.DEFAULT})")  # fmt: skip
    _keep_state_arg(send)
    _common_args(send)

    resume = sub.add_parser("resume", help="continue an interrupted upload", epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    resume.add_argument("session_id", metavar="SESSION_ID")
    _file_args(resume)
    resume.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, metavar="N",
                        help=f"parts in flight across all files (default {DEFAULT_PARALLEL})")  # fmt: skip
    _keep_state_arg(resume)
    _common_args(resume)

    status = sub.add_parser("status", help="show a group's status and progress")
    status.add_argument("session_id", metavar="SESSION_ID")
    _common_args(status)
    cancel = sub.add_parser("cancel", help="cancel a group (its stored parts are deleted)")
    cancel.add_argument("session_id", metavar="SESSION_ID")
    _common_args(cancel)
    return parser


def local_files(args: argparse.Namespace) -> list[LocalFile]:
    """The file options as LocalFiles, in the order the service expects them."""
    out: list[LocalFile] = []
    for role in ROLES:  # the options are named after the roles, and the roles are in the service's order
        flag = "--" + role.replace("_", "-")
        for value in getattr(args, role):
            language = None
            path = value
            if role in ("audio", "subtitle"):
                language, sep, path = value.partition("=")
                if not sep:  # no LANG=: the service's own sentence says what is missing
                    language, path = None, value
            out.append(LocalFile(Path(path).expanduser(), role, language, origin=f"{flag} {value}"))
    return out


def _spec(args: argparse.Namespace) -> UploadSpec:
    return UploadSpec(
        video_name=args.name, layout=args.layout, files=tuple(local_files(args)), description=args.description,
        perspective=args.perspective, folder_name=args.folder,
        checksum=None if args.checksum == checksums.NONE else args.checksum,
    )  # fmt: skip


def _state_file(args: argparse.Namespace, session_id: str) -> Path:
    return args.state if args.state is not None else state_path(args.state_dir, session_id)


def _resume_command(args: argparse.Namespace, session_id: str | None) -> str | None:
    if session_id is None:
        return None
    where = ""
    if args.state is not None:
        where = f" --state {args.state}"
    elif args.state_dir != Path(STATE_DIR):
        where = f" --state-dir {args.state_dir}"
    return f"{PROG} resume {session_id}{where}"


class Tracker:
    """Passes events on, remembering the session id for the interrupt and failure messages."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self.session_id: str | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, GroupStarted):
            self.session_id = event.session_id
        self.inner(event)


@contextlib.contextmanager
def renderer(as_json: bool) -> Iterator[Reporter]:
    """JSON lines with --json, bars on a terminal, plain lines otherwise."""
    if as_json:
        yield JsonLines()
    elif sys.stderr.isatty():
        with RichBars() as bars:
            yield bars
    else:
        yield PlainLines()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run with SIGTERM cancelling the run like Ctrl-C does."""

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro

    return asyncio.run(main())


def _target(args: argparse.Namespace, recorded_url: str | None = None, recorded_from: str = "") -> config.Target:
    target = config.locate(args.api_url, api_key_file=args.api_key_file, recorded_url=recorded_url,
                           recorded_from=recorded_from or "the state file")  # fmt: skip
    missing = target.missing(config.dev_env_path(os.environ))
    if missing:
        raise Usage(missing)
    if target.note:
        _say(f"note: {target.note}")
    return target


def _unreachable(exc: ServiceUnreachable, target: config.Target) -> str:
    return f"error: {exc}\n  {target.url_hint()}"


def _transfer(args: argparse.Namespace, work: Callable[[UploadClient, Reporter], Coroutine[Any, Any, UploadResult]],
              recorded_url: str | None = None, recorded_from: str = "") -> int:  # fmt: skip
    """Run an upload or a resume with progress, and turn its outcome into output and an exit code."""
    if args.parallel < 1:
        raise Usage("--parallel must be at least 1")
    target = _target(args, recorded_url, recorded_from)
    assert target.url is not None and target.key is not None
    url, key = target.url, target.key
    with renderer(args.json) as shown:
        tracker = Tracker(shown)

        async def go() -> UploadResult:
            async with UploadClient(url, key, parallel=args.parallel) as client:
                return await work(client, tracker)

        try:
            result = _run(go())
        except (KeyboardInterrupt, asyncio.CancelledError):
            resume = _resume_command(args, tracker.session_id)
            if args.json:
                shown(Interrupted(session_id=tracker.session_id, resume=resume))
            _say(f"interrupted; continue with: {resume or 'the same send command'}")
            return EXIT_INTERRUPTED
        except (InvalidUpload, StateFileError):
            raise
        except UploadError as exc:
            resume = _resume_command(args, tracker.session_id) if _resumable(exc) else None
            message = _unreachable(exc, target) if isinstance(exc, ServiceUnreachable) else f"error: {exc}"
            if args.json:
                shown(Failed(message=message.removeprefix("error: "), session_id=tracker.session_id, resume=resume))
            _say(message + (f"\nthe upload can be resumed: {resume}" if resume else ""))
            return EXIT_FAILED
    if not args.keep_state:
        remove_state(result.state_file, default_dir=args.state is None)
    if not args.json:
        print(result.library_id)
    return EXIT_OK


def _resumable(exc: UploadError) -> bool:
    """False when the group cannot go on (canceled, expired, failed, or refused as invalid)."""
    if isinstance(exc, ServiceError):
        return exc.status not in (400, 401, 403, 404, 409) or exc.code == "missing_parts"
    return not isinstance(exc, LocalFileChanged | ChecksumMismatch)


def cmd_send(args: argparse.Namespace) -> int:
    """`send`: create (or find again) the group, upload and complete every file."""
    spec = _spec(args)

    async def work(client: UploadClient, report: Reporter) -> UploadResult:
        return await client.upload_group(
            spec, on_progress=report, state_dir=args.state_dir, state_file=args.state, fresh=args.new
        )

    return _transfer(args, work)


def cmd_resume(args: argparse.Namespace) -> int:
    """`resume`: continue from the state file, or from the named local files (another machine)."""
    files = local_files(args)
    path = _state_file(args, args.session_id)
    recorded = None
    if not files:
        try:
            recorded = load_state(path).api_url
        except StateFileError as exc:
            raise StateFileError(
                f"{exc}; pass --state PATH, run the same send command again, or name the files as send does "
                "(--video-left L.mov ...)"
            ) from None

    async def work(client: UploadClient, report: Reporter) -> UploadResult:
        return await client.resume_group(args.session_id, state_file=path, files=files or None, on_progress=report)

    return _transfer(args, work, recorded, f"the state file {path}")


def _recorded_url(args: argparse.Namespace) -> str | None:
    path = _state_file(args, args.session_id)
    try:
        return load_state(path).api_url if path.exists() else None
    except StateFileError:
        return None


def cmd_status(args: argparse.Namespace) -> int:
    """`status`: the group and its files as the service reports them."""
    target = _target(args, _recorded_url(args), f"the state file {_state_file(args, args.session_id)}")

    async def go() -> Any:
        async with UploadClient(str(target.url), str(target.key)) as client:
            return await client.group_status(args.session_id)

    try:
        status = _run(go())
    except UploadError as exc:
        _say(_unreachable(exc, target) if isinstance(exc, ServiceUnreachable) else f"error: {exc}")
        return EXIT_FAILED
    if args.json:
        print(msgspec.json.encode(status).decode())
        return EXIT_OK
    print(f"{status.session_id}  {status.status}  {status.video_name!r}  layout {status.layout}  "
          f"libraryId {status.library_id}  expires {status.expires_at}")  # fmt: skip
    for f in status.files:
        print(f"  {f.file_name:<32} {f.file_role:<12} {f.status:<11} {f.uploaded_parts}/{f.total_parts} parts  "
              f"{human_bytes(f.uploaded_bytes)} of {human_bytes(f.total_bytes)}"
              + (f"  ({f.failure})" if f.failure else "")
              + (f"  {f.checksum.algorithm} {f.checksum.value}" if f.checksum else ""))  # fmt: skip
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    """`cancel`: cancel the group; storage deletes what it holds of it."""
    target = _target(args, _recorded_url(args), f"the state file {_state_file(args, args.session_id)}")

    async def go() -> Any:
        async with UploadClient(str(target.url), str(target.key)) as client:
            return await client.cancel_group(args.session_id)

    try:
        canceled = _run(go())
    except UploadError as exc:
        _say(_unreachable(exc, target) if isinstance(exc, ServiceUnreachable) else f"error: {exc}")
        return EXIT_FAILED
    path = _state_file(args, args.session_id)
    with contextlib.suppress(StateFileError):
        if path.exists():
            state = load_state(path)
            state.status = "canceled"
            save_state(state, path)
    if args.json:
        print(msgspec.json.encode(canceled).decode())
    else:
        print(f"{canceled.session_id} canceled at {canceled.canceled_at}: "
              f"{canceled.canceled_file_count} of {canceled.file_count} files")  # fmt: skip
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "send": cmd_send,
    "resume": cmd_resume,
    "status": cmd_status,
    "cancel": cmd_cancel,
}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `spatialgen-upload`; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InvalidUpload as exc:
        _say("error: nothing was uploaded:")
        for problem in exc.problems:
            _say(f"  {problem}")
        return EXIT_USAGE
    except (ConfigError, StateFileError, Usage) as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C or SIGTERM outside an upload (status, cancel)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
