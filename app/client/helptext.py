"""The text of `spatialgen-upload --help`: what the command does, how to resume, checksums, the service and key."""

from __future__ import annotations

from app.client.state import STATE_DIR

PROG = "spatialgen-upload"

DESCRIPTION = """\
Upload a video asset set to SpatialGen: the group is created, every file is sent in parts straight to
storage (at most --parallel parts in flight, each streamed from disk), each file is completed, and the
libraryId is printed on stdout.
"""
EPILOG = f"""\
resuming:
  An upload stopped by Ctrl-C, a crash, a lost network or a failed part continues with
    {PROG} resume SESSION_ID
  (it reads {STATE_DIR}/SESSION_ID.json in the current directory, or --state PATH), or by running the
  same send command again: the same files and options give the same Idempotency-Key, so the service
  returns the same group. Only the parts storage does not hold yet are sent. On another machine, name
  the files again: {PROG} resume SESSION_ID --video-left L.mov --video-right R.mov ...

  A group's state file (0600) is removed once the group completes (--keep-state keeps it).

checksums:
  Each part's --checksum (default CRC64NVME) is computed before its PUT and signed into its URL, so storage
  refuses bytes that differ; the whole file's is combined from the parts' and checked at complete. The
  checksum storage recorded is compared with the local one and shown (--json: file_completed.checksum).
  A service whose storage verifies no checksums, or not that one, says so: --checksum none sends without.

service and key:
  URL: --api-url, else SPATIALGEN_API_URL, else .data/dev.env written by `make run` (SPATIALGEN_DATA_DIR
  moves .data). Key: --api-key-file PATH (chmod 600), else SPATIALGEN_API_KEY, else .data/dev.env; never
  an argument (ps and shell history show those). The key goes to that URL only: a state file naming another
  is refused unless --api-url is given. Nothing answering at the URL fails at once, saying where it came from.

exit codes:
  0 done, 1 failed (the service refused, or a part failed 10 times in a row: resumable),
  2 usage or local validation error, 130 interrupted (resumable).
"""
