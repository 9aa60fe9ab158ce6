"""Shared test settings: one thread everywhere, and the one way tests start multi-process (DDP) jobs.

* Threads: the suite runs on shared, busy machines; one intra-op thread (here and in every subprocess via
  ``OMP_NUM_THREADS``) keeps the runs fast and their numbers independent of the core count.
* :func:`launch_ddp` starts N processes of a command as torchrun would (``RANK``, ``WORLD_SIZE``, ...), with
  the rendezvous store hosted here on a port the OS picks and holds (no free-port guess that another process
  can take in between); every rank joins it as a client, so ``init_process_group("gloo")`` works unchanged.
* Registries: whatever a test registers (a loss, a backbone, a callback) is gone after it (``_clean_registries``).
* ``@pytest.mark.slow``: tests that start other processes (``pytest -m "not slow"`` is the quick run).
* :func:`subprocess_env`: the environment for a child ``python``: this checkout and ``tests/`` on the path,
  one thread, and SIGINT restored to its default in the child (:func:`default_sigint`), so a Ctrl-C test also
  holds when the suite runs as a background job of a non-interactive shell (which starts it with SIGINT
  ignored, an inherited setting).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import pytest
import torch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts with one intra-op thread, whatever the previous test did."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _clean_registries():
    """Every name registry (losses, backbones, data sets, callbacks: ``wsml.registry.Registry.every``) is restored
    after each test, so an entry a test registers never leaks into the next one."""
    from wsml.registry import Registry

    saved = [(r, r.snapshot()) for r in Registry.every]
    yield
    for r, state in saved:
        r.restore(state)


@pytest.fixture
def ddp():
    """:func:`launch_ddp`, for tests that start multi-process jobs."""
    return launch_ddp


@pytest.fixture
def child_env():
    """:func:`subprocess_env`, for tests that start a child python."""
    return subprocess_env


def subprocess_env(**extra: str) -> dict:
    """``os.environ`` plus this checkout and tests/ on PYTHONPATH and one thread; ``extra`` on top."""
    path = os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path, **extra)


def cli_error(argv: list, capsys) -> str:
    """Run ``wsml argv`` in-process and return its stderr, asserting the CLI's promise for a user error: exit code
    2 and exactly one line ``wsml: error: ...``, no traceback."""
    from wsml.cli import main

    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.startswith("wsml: error: ") and err.count("\n") == 1, err
    return err


def default_sigint() -> None:
    """``preexec_fn`` for children that must react to Ctrl-C: undo an inherited 'SIGINT ignored'."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def launch_ddp(target: Union[Sequence[str], Callable], nprocs: int = 2, env: Optional[dict] = None,
               timeout: float = 110, args: tuple = ()) -> list:
    """Run ``target`` as ``nprocs`` ranks joined by a store on an OS-chosen port held by this process.

    ``target`` is a python command line (``["-m", "wsml.cli", "train", ...]``): each rank is a fresh
    interpreter, and one CompletedProcess per rank is returned (stdout and stderr together in ``stdout``).
    Or a function ``target(*args)`` of this module tree: each rank is a forked child (fast, torch is already
    imported), and its exit codes are returned. In both, ``init_process_group("gloo")`` joins the job.
    """
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", 0, nprocs, is_master=True, wait_for_workers=False,
                     timeout=timedelta(seconds=timeout))
    base = dict(env or subprocess_env(), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(store.port),
                WORLD_SIZE=str(nprocs), LOCAL_WORLD_SIZE=str(nprocs), TORCHELASTIC_USE_AGENT_STORE="True")
    try:
        if callable(target):
            return _fork_ranks(target, args, nprocs, base, timeout)
        return _run_ranks(list(target), nprocs, base, timeout)
    finally:
        del store


def _run_ranks(argv: list, nprocs: int, env: dict, timeout: float) -> list:
    procs = [subprocess.Popen([sys.executable, *argv], env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(nprocs)]
    results = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out, None))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def _rank_main(fn: Callable, args: tuple, env: dict) -> None:
    os.environ.update(env)
    fn(*args)


def _fork_ranks(fn: Callable, args: tuple, nprocs: int, env: dict, timeout: float) -> list:
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_rank_main, args=(fn, args, dict(env, RANK=str(r), LOCAL_RANK=str(r))))
             for r in range(nprocs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join()
    return [p.exitcode for p in procs]
