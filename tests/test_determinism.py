"""Two runs of the grid with one seed give equal metrics (issue 9, item 8), on the micro grid."""

from __future__ import annotations

import json

import pytest
from test_workflow import micro_config, snakemake


def metrics(work) -> dict[str, dict]:
    """Every metrics JSON of a run (not the resolved configs written beside them), by relative path."""
    files = sorted(
        f for f in (work / "results" / "metrics").rglob("*.json") if not f.name.endswith(".config.json")
    )
    assert files, f"no metrics under {work}"
    return {str(f.relative_to(work)): json.loads(f.read_text()) for f in files}


@pytest.mark.slow
def test_two_runs_with_one_seed_give_equal_metrics(tmp_path):
    runs = []
    for name in ("a", "b"):
        work = tmp_path / name
        work.mkdir()
        r = snakemake(work, micro_config(), "--cores", "2", timeout=1200)
        assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
        runs.append(metrics(work))
    a, b = runs
    assert sorted(a) == sorted(b)
    for path in a:
        assert a[path]["metrics"] == pytest.approx(b[path]["metrics"], abs=1e-12), path
        per_a, per_b = a[path]["per_query"], b[path]["per_query"]
        assert per_a.keys() == per_b.keys()
        for qid in per_a:
            assert per_a[qid] == pytest.approx(per_b[qid], abs=1e-12), (path, qid)
