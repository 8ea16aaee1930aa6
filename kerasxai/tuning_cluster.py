"""Distributed hyper-parameter search on one machine: a KerasTuner chief + N workers.

    python -m kerasxai.tune --workers 2 --config configs/pcb_mobilenet.yaml [key=value ...]

:func:`launch` starts ``python -m kerasxai.tune`` once as the chief (``KERASTUNER_TUNER_ID=chief``:
it holds the Bayesian oracle and serves it over gRPC) and N times as workers (``tuner0``,
``tuner1``, ...: each asks the chief for hyper-parameters, trains, reports back). All share the search
folder ``<tune.dir>/<name>/``; when the trial budget is spent the workers stop, the chief
writes trials.csv / trials.md / parallel_coordinates.png / best_config.yaml and exits.

On several machines run the same command lines by hand: the chief on one host with
``KERASTUNER_ORACLE_IP`` set to an address the workers can reach, the workers anywhere with
the same ``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT`` and a shared ``tune.dir``
(e.g. a network file system) so the run folders land in one place.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody listens on now, for the chief's oracle."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config: str, overrides: list[str], workers: int, port: int | None = None, ip: str = "127.0.0.1",
           timeout: float | None = None, log_dir: Path | None = None, python: str = sys.executable) -> int:
    """Run the chief and `workers` workers to completion; returns the chief's exit code.

    The tiles are prepared once here, before the processes start; their logs go to ``log_dir``
    (default ``<tune.dir>/<name>/logs/``). A failed worker or the timeout stops them all (1)."""
    from kerasxai.config import load_config
    from kerasxai.data.pipeline import prepare_dataset
    from kerasxai.tuning import search_dir

    cfg = load_config(config, overrides)
    prepare_dataset(cfg, progress=True)  # once, before the workers start (they all reuse it)
    port = port or free_port()
    cmd = [python, "-m", "kerasxai.tune", "--config", config, "--quiet", *overrides]
    log_dir = Path(log_dir) if log_dir else search_dir(cfg) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = {}
    for tuner_id in ["chief"] + [f"tuner{i}" for i in range(workers)]:
        env = dict(os.environ, KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=ip,
                   KERASTUNER_ORACLE_PORT=str(port))
        log = open(log_dir / f"{tuner_id}.log", "w")
        procs[tuner_id] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        print(f"started {tuner_id} (pid {procs[tuner_id][0].pid}), log {log_dir / f'{tuner_id}.log'}")
        if tuner_id == "chief":
            time.sleep(2)  # workers wait for the server anyway (gRPC wait_for_ready)
    start = time.time()
    try:
        while any(p.poll() is None for p, _ in procs.values()):
            failed = [t for t, (p, _) in procs.items() if t != "chief" and p.poll() not in (None, 0)]
            if failed or (timeout and time.time() - start > timeout):
                why = f"worker(s) {', '.join(failed)} failed" if failed else f"timeout after {timeout:.0f} s"
                print(f"{why}: stopping the cluster (see the logs in {log_dir})", file=sys.stderr)
                for p, _ in procs.values():
                    if p.poll() is None:
                        p.terminate()
                for p, _ in procs.values():
                    p.wait()
                return 1
            time.sleep(1)
    except KeyboardInterrupt:
        for p, _ in procs.values():
            p.terminate()
        raise
    finally:
        for _, log in procs.values():
            log.close()
    codes = {t: p.returncode for t, (p, _) in procs.items()}
    print("exit codes:", codes)
    return codes["chief"] if all(c == 0 for c in codes.values()) else 1
