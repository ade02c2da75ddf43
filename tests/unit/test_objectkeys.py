"""Object keys: built from ids and the validated extension only, and parsed back by the orphan sweep."""

from __future__ import annotations

import pytest

from app.domain.contract import FileRole, Layout, UploadStrategy
from app.domain.objectkeys import ObjectKey, group_prefix, parse_object_key, root_prefix
from app.domain.records import FileRecord, GroupRecord
from app.domain.rules import file_extension


def record(prefix: str, client_name: str) -> tuple[GroupRecord, FileRecord]:
    """A group as production builds it (uploads._new_group): prefix stored once, the extension per file."""
    f = FileRecord(upload_id="u1", role=FileRole.VIDEO, name=client_name, total_bytes=1, part_size=1, total_parts=1,
                   strategy=UploadStrategy.SINGLE_PUT, language=None, ext=file_extension(client_name))  # fmt: skip
    g = GroupRecord(session_id="s1", account="acme", key_prefix=group_prefix(prefix, "acme", "s1"), video_name="v",
                    description=None, layout=Layout.FLAT_2D, perspective=None, folder_name=None, created_ms=0,
                    expires_ms=1, files=(f,))  # fmt: skip
    return g, f


@pytest.mark.parametrize(
    ("prefix", "client_name", "key"),
    [
        ("uploads", "../../etc/pass wd.MOV", "uploads/acme/s1/u1.mov"),
        ("", "x.srt", "acme/s1/u1.srt"),
        ("/a/b/", "x.zip", "a/b/acme/s1/u1.zip"),
        ("uploads", "noext", "uploads/acme/s1/u1"),
    ],
)
def test_keys_use_ids_and_the_validated_extension_only_and_parse_back(prefix: str, client_name: str, key: str) -> None:
    g, f = record(prefix, client_name)
    assert g.storage_key(f) == key
    assert parse_object_key(prefix, key) == ObjectKey("acme", "s1", "u1")


@pytest.mark.parametrize(
    "key",
    ["other/acme/s1/u1.mov", "uploads/acme/s1", "uploads/acme/s1/u1.mov/extra", "uploads//s1/u1.mov", "uploads/"],
)
def test_keys_this_service_did_not_make_do_not_parse(key: str) -> None:
    assert parse_object_key("uploads", key) is None


def test_root_prefix() -> None:
    assert root_prefix("uploads") == root_prefix("/uploads/") == "uploads/"
    assert root_prefix("") == root_prefix("/") == ""
