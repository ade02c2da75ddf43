"""Redis state of upload groups: key schema (keys), job format (jobs), Lua scripts (scripts, lua/), the
group snapshot (snapshot), auto-pipelining (pipeline) and the typed calls over all of it (store).
"""

from app.state.runner import ScriptReply
from app.state.snapshot import GroupSnapshot, Progress, decode_group, encode_group
from app.state.store import UploadState

__all__ = ["GroupSnapshot", "Progress", "ScriptReply", "UploadState", "decode_group", "encode_group"]
