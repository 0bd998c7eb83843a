"""SLURM tests: they need a running cluster with accounting (``bash workflow/ci/local-slurm.sh start``)
and run only when asked for with ``-m slurm`` (``make test-slurm``); elsewhere they are skipped."""

from __future__ import annotations

import shutil
import subprocess

import pytest

HOW = (
    "start a cluster with `bash workflow/ci/local-slurm.sh start` (root, Debian), then run `make test-slurm`"
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slurm: needs a running SLURM cluster with accounting; run with `make test-slurm` "
        "(pytest tests/slurm -m slurm) after `bash workflow/ci/local-slurm.sh start`",
    )
    config.addinivalue_line(
        "markers",
        "rehearsal: the rehearsal of the paper's DAG on the two-node cluster (about 10 minutes); "
        "`make rehearsal` runs it, `make test-slurm` leaves it out",
    )


def pytest_collection_modifyitems(config, items):
    """Not asked for with -m slurm (the default run): skip at once, without asking the cluster."""
    if "slurm" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason=f"SLURM tests run only with -m slurm: {HOW}")
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(skip)


def answers(*command: str) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return None
    return out.stdout if out.returncode == 0 else None


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The node's state; skips the SLURM tests when `sinfo` or `sacct` does not answer."""
    state = answers("sinfo", "-h", "-o", "%T")
    if not state or not state.split():
        pytest.skip(f"no SLURM cluster answers `sinfo`: {HOW}")
    if answers("sacct", "-n", "-X", "-S", "now") is None:
        pytest.skip(f"`sacct` does not answer (the tests need SLURM accounting): {HOW}")
    if answers("sacctmgr", "-n", "-P", "list", "account", "llara-ci", "format=account") != "llara-ci\n":
        pytest.skip(f"account llara-ci missing (the tests expect the project's local cluster): {HOW}")
    return state.split()[0]
