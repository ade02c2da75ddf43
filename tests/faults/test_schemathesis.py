"""Schemathesis over the running API's own OpenAPI document: no generated request may get a server error.

The API and a worker run as processes (the console scripts) on real Valkey and moto; the document's links
let the stateful phase follow a created group into its part-urls, complete, status and cancel calls.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from tests.processes import Stack, report

EXAMPLES_PER_OPERATION = 40


async def test_no_server_error_for_any_generated_request(stack: Stack, tmp_path: Path) -> None:
    stack.start_stores()
    base = stack.start_api()
    stack.start_worker()
    key = (await stack.key())["X-SPATIALGEN-APPKEY"]
    st = Path(sys.executable).with_name("st")
    run = await asyncio.to_thread(
        subprocess.run,
        [str(st), "run", f"{base}/schema/openapi.json", "--checks", "not_a_server_error",
         "--header", f"X-SPATIALGEN-APPKEY: {key}", "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", "7",
         "--workers", "2", "--request-timeout", "30", "--report-dir", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert cases is not None, run.stdout[-3000:]
    generated, passed = map(int, cases.groups())
    assert generated == passed > 0
    report(f"schemathesis: {generated} generated requests over 9 operations, {passed} passed, 0 server errors")
