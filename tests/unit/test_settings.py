"""Settings: every field documented in .env.example, env parsing, and the checks on bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import ENV_PREFIX, Settings, field_docs

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented_in_env_example_and_readme() -> None:
    docs = field_docs()
    assert set(docs) == {ENV_PREFIX + f.upper() for f in Settings.__struct_fields__}
    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for env, doc in docs.items():
        assert f"# {env}=" in example and doc in example, env
        assert f"`{env}`" in readme, env


def test_env_values_are_parsed_and_typed() -> None:
    s = Settings.from_env({"SPATIALGEN_PORT": "9001", "SPATIALGEN_COMPLETE_WAIT_SECONDS": "1.5", "OTHER": "x"})
    assert s.port == 9001 and s.complete_wait_seconds == 1.5
    assert s.part_size_bytes == 104_857_600 and s.session_ttl_seconds == 432_000


@pytest.mark.parametrize(
    "env",
    [
        {"SPATIALGEN_PORT": "eighty"},
        {"SPATIALGEN_PART_SIZE_BYTES": "1024"},
        {"SPATIALGEN_MAX_FILE_BYTES": str(6 * 1024**4)},
        {"SPATIALGEN_S3_ADDRESSING_STYLE": "sideways"},
        {"SPATIALGEN_SESSION_TTL_SECONDS": "0"},
    ],
)
def test_bad_settings_fail_loudly(env: dict[str, str]) -> None:
    with pytest.raises(SystemExit):
        Settings.from_env(env)
