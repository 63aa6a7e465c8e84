"""`unast compress` rides out a database that goes away for a few seconds in the middle of a run (issue
20): the services answer 503 with Retry-After, the clients retry, the workers wait, and the run
finishes. The database sits behind a proxy that refuses and cuts every connection for the blip."""

import json
import os
import signal
import time

import pytest
from sqlalchemy.engine import make_url

from shared.settings import Settings
from tests.db_proxy import Proxy
from tests.services.pipeline.test_compress import HANG_GUARD_S, TINY, compress, free_port, record
from tests.services.trainer.conftest import make_teacher

BLIP_S = 6.0


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_run_finishes_through_a_database_blip(tmp_path, settings, trained_teacher):
    teacher = make_teacher(settings, trained_teacher)
    url = make_url(settings.database_url)
    proxy = Proxy((url.host or "127.0.0.1", url.port or 5432))
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    proxied = Settings(**(settings.model_dump() | {"database_url": through}))
    (tmp_path / "tiny.json").write_text(json.dumps(TINY | {"baselines": False, "onnx": False}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")} | proxied.to_env()
    env |= {f"UNAST_{name}_PORT": str(free_port()) for name in ("PROFILER", "SEARCH", "TRAINER")}
    env |= {"UNAST_TRAINER_HEARTBEAT_S": "0.5", "UNAST_TRAINER_POLL_S": "0.2", "UNAST_PROFILER_POLL_S": "0.2"}
    env |= {"UNAST_DATABASE_CONNECT_TIMEOUT_S": "2", "PYTHONUNBUFFERED": "1"}

    run = compress(tmp_path, env, teacher)
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while record(tmp_path)["stages"].get("distill", {}).get("job_id") is None:
            assert run.poll() is None, (tmp_path / "compress.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "distillation never started"
            time.sleep(0.2)
        proxy.refuse()  # the database goes away while the distill job runs and the run waits on it
        time.sleep(BLIP_S)
        proxy.forward()
        assert run.wait(HANG_GUARD_S) == 0, (tmp_path / "compress.log").read_text()[-5000:]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        proxy.close()
    stages = record(tmp_path)["stages"]
    assert all(stages[s]["state"] == "done" for s in ("distill", "score", "unast-finetune", "export"))
    assert "Traceback" not in (tmp_path / "compress.log").read_text()
