"""Code location for tests/test_crashed_runs.py, served by `dagster api grpc` like a real code server.

One asset in the `warehouse` pool. While the file named by $STRATA_TEST_HOLD exists, its step starts a
child process (standing in for dbt) and waits, holding the pool's only slot: the test kills that
run's processes there. Without the file the step finishes at once.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import dagster as dg

from resources.warehouse import WAREHOUSE_POOL

HOLD_ENV = "STRATA_TEST_HOLD"


@dg.asset(key=["silver", "pooled_model"], pool=WAREHOUSE_POOL)
def pooled_model(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    hold = Path(os.environ[HOLD_ENV])
    if hold.exists():
        child = subprocess.Popen(["sleep", "600"])
        # The test reads the step's process ids from here; written last, so both exist when it is read.
        hold.with_suffix(".pids").write_text(json.dumps({"step": os.getpid(), "child": child.pid}))
        while hold.exists():
            time.sleep(0.2)
        child.kill()
    return dg.MaterializeResult(metadata={"run_id": context.run.run_id})


pooled_job = dg.define_asset_job("pooled_job", selection=[pooled_model])
defs = dg.Definitions(assets=[pooled_model], jobs=[pooled_job])
