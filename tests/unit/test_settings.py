"""Settings: every field documented in .env.example, env parsing, and the checks on bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import ENV_PREFIX, Settings, with_dev_env
from app.settings.docs import field_docs, render_env_example
from deploy.local.gendocs import readme_with_table

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented_in_env_example_and_readme() -> None:
    docs = field_docs()
    groups = [getattr(Settings(), name) for name in Settings.__struct_fields__]
    assert set(docs) == {ENV_PREFIX + (type(g).PREFIX + f).upper() for g in groups for f in g.__struct_fields__}
    assert all(docs.values())
    # Both are generated (`make docs`); what is committed must be what the settings say now.
    assert (ROOT / ".env.example").read_text() == render_env_example()
    readme = (ROOT / "README.md").read_text()
    assert readme == readme_with_table(readme), "README settings table is stale: run `make docs`"


def test_cli_tools_find_make_runs_services_through_dev_env(tmp_path: Path) -> None:
    (tmp_path / "dev.env").write_text("# comment\nSPATIALGEN_REDIS_URL=redis://127.0.0.1:4242/0\nOTHER=x\n")
    env = with_dev_env({"SPATIALGEN_DATA_DIR": str(tmp_path)})
    assert env["SPATIALGEN_REDIS_URL"] == "redis://127.0.0.1:4242/0" and "OTHER" not in env
    # An explicit setting always wins; no file, nothing added.
    explicit = {"SPATIALGEN_DATA_DIR": str(tmp_path), "SPATIALGEN_REDIS_URL": "redis://elsewhere:6379/0"}
    assert with_dev_env(explicit) == explicit
    assert with_dev_env({"SPATIALGEN_DATA_DIR": str(tmp_path / "none")}) == {
        "SPATIALGEN_DATA_DIR": str(tmp_path / "none")
    }


def test_env_values_are_parsed_and_typed() -> None:
    s = Settings.from_env({"SPATIALGEN_PORT": "9001", "SPATIALGEN_COMPLETE_WAIT_SECONDS": "1.5", "OTHER": "x"})
    assert s.server.port == 9001 and s.api.complete_wait_seconds == 1.5
    assert s.server.ops_port == 0, "the operations routes stay on PORT unless asked"
    assert Settings.from_env({"SPATIALGEN_OPS_PORT": "8081"}).server.ops_port == 8081
    assert s.uploads.part_size_bytes == 104_857_600 and s.uploads.session_ttl_seconds == 432_000


def test_each_part_gets_its_slice_under_the_variables_it_always_had() -> None:
    s = Settings.from_env({"SPATIALGEN_S3_BUCKET": "b", "SPATIALGEN_REDIS_URL": "redis://r:1/2",
                           "SPATIALGEN_WORKER_MAX_JOBS": "7", "SPATIALGEN_RATE_LIMITS": "off"})  # fmt: skip
    assert (s.storage.bucket, s.redis.url, s.worker.worker_max_jobs, s.limits.rate_limits) == (
        "b", "redis://r:1/2", 7, "off"
    )  # fmt: skip
    assert s.override(s3_bucket="c").storage.bucket == "c" and s.storage.bucket == "b"
    assert s.value("s3_bucket") == "b"
    with pytest.raises(TypeError, match="SPATIALGEN_S3_BUKET"):
        s.override(s3_buket="typo")


@pytest.mark.parametrize(
    "env",
    [
        {"SPATIALGEN_PORT": "eighty"},
        {"SPATIALGEN_PART_SIZE_BYTES": "1024"},
        {"SPATIALGEN_MAX_FILE_BYTES": str(6 * 1024**4)},
        {"SPATIALGEN_S3_ADDRESSING_STYLE": "sideways"},
        {"SPATIALGEN_SESSION_TTL_SECONDS": "0"},
        {"SPATIALGEN_OPS_PORT": "8000"},  # the API's own port
        {"SPATIALGEN_OPS_PORT": "9100", "SPATIALGEN_PORT": "9100"},
        {"SPATIALGEN_OPS_PORT": "-1"},
        {"SPATIALGEN_OPS_PORT": "65536"},
    ],
)
def test_bad_settings_fail_loudly(env: dict[str, str]) -> None:
    with pytest.raises(SystemExit):
        Settings.from_env(env)
