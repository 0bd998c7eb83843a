"""Every stage CLI on bad input, run as the grid runs it (``python -m llara.<stage>`` in a subprocess):
exit status 2, the last line of stderr is one ``error: ...`` line naming the offending file (or flag)
and no traceback (issue 18). The commands run a few at a time in the background from the first test
on, so the whole table costs about as long as its slowest imports (torch, transformers), not their sum.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.extended  # seconds of subprocesses each: `make test-extended` (CI runs it)


WIKI_ROW = {"id": "1", "url": "u", "title": "Nile", "text": "The Nile is a river. It is long. " * 20}


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # after `python -m`; {d} is the folder of the bad inputs
    names: tuple[str, ...]  # the last line names one of these (a path, with {d}, or a flag)
    heavy: bool = False  # imports torch / transformers: started first
    pending: str = ""  # the fix this case waits for, in a file another engineer owns


def case(id: str, *argv: str, names: str | tuple[str, ...], heavy: bool = False, pending: str = "") -> Case:
    return Case(id, argv, (names,) if isinstance(names, str) else names, heavy, pending)


SYNTH_SIZES = (
    "--n-articles",
    "30",
    "--n-corpus-articles",
    "30",
    "--n-train-queries",
    "1",
    "--n-test-queries",
    "1",
)
BEIR = ("llara.beir", "check", "--split", "test", "--beir-dir")
CASES = [
    # --- llara.synthetic: its arguments and where it writes
    case("synthetic-nothing-to-write", "llara.synthetic", "--seed", "0", names="--beir-out"),
    case("synthetic-no-test-queries", "llara.synthetic", "--beir-out", "{d}/out/s1", "--n-test-queries", "0",
         names="--n-test-queries"),
    case("synthetic-beir-out-under-a-file", "llara.synthetic", "--beir-out", "{d}/afile.txt/beir", *SYNTH_SIZES,
         names="{d}/afile.txt/beir"),
    case("synthetic-articles-out-is-a-folder", "llara.synthetic", "--articles-out", "{d}/beir-ok", *SYNTH_SIZES,
         names="{d}/beir-ok"),
    # --- llara.wiki
    case("wiki-missing-source", "llara.wiki", "--source", "{d}/missing.parquet", "--output", "{d}/out/w1.jsonl",
         names="{d}/missing.parquet"),
    case("wiki-empty-source", "llara.wiki", "--source", "{d}/empty.jsonl", "--output", "{d}/out/w2.jsonl",
         names="{d}/empty.jsonl"),
    case("wiki-invalid-json-line", "llara.wiki", "--source", "{d}/badjson.jsonl", "--output", "{d}/out/w3.jsonl",
         names="{d}/badjson.jsonl:2"),
    case("wiki-missing-columns", "llara.wiki", "--source", "{d}/nocols.jsonl", "--output", "{d}/out/w4.jsonl",
         names="{d}/nocols.jsonl:1"),
    case("wiki-not-parquet", "llara.wiki", "--source", "{d}/notparquet.parquet", "--output", "{d}/out/w5.jsonl",
         names="{d}/notparquet.parquet"),
    case("wiki-output-under-a-file", "llara.wiki", "--source", "{d}/wiki-ok.jsonl", "--output",
         "{d}/afile.txt/pairs.jsonl", names="{d}/afile.txt/pairs.jsonl"),
    # --- llara.beir
    case("beir-missing-folder", *BEIR, "{d}/nobeir", names="{d}/nobeir"),
    case("beir-empty-corpus", *BEIR, "{d}/beir-emptycorpus", names="{d}/beir-emptycorpus/corpus.jsonl"),
    case("beir-invalid-json-line", *BEIR, "{d}/beir-badqueries", names="{d}/beir-badqueries/queries.jsonl:2"),
    case("beir-qrels-column-count", *BEIR, "{d}/beir-badqrels", names="{d}/beir-badqrels/qrels/test.tsv:2"),
    case("beir-missing-split", "llara.beir", "check", "--beir-dir", "{d}/beir-ok", "--split", "dev",
         names="{d}/beir-ok/qrels/dev.tsv"),
    case("beir-subsample-missing-folder", "llara.beir", "subsample", "--beir-dir", "{d}/nobeir", "--num-queries",
         "1", "--num-other-docs", "1", "--output", "{d}/out/sub", names="{d}/nobeir"),
    case("beir-download-unknown-name", "llara.beir", "download", "--name", "scifacts", "--cache-dir", "{d}/cache",
         names="scifacts"),
    case("beir-download-foreign-folder", "llara.beir", "download", "--name", "scifact", "--cache-dir",
         "{d}/cache", names="{d}/cache/scifact"),
    # --- llara.hfpairs
    case("hfpairs-missing-file", "llara.hfpairs", "--dataset", "{d}/nope.jsonl", "--output", "{d}/out/h1.jsonl",
         names="{d}/nope.jsonl"),
    case("hfpairs-empty-file", "llara.hfpairs", "--dataset", "{d}/empty.jsonl", "--output", "{d}/out/h2.jsonl",
         names="{d}/empty.jsonl"),
    case("hfpairs-invalid-json-line", "llara.hfpairs", "--dataset", "{d}/badtevatron.jsonl", "--output",
         "{d}/out/h3.jsonl", names="{d}/badtevatron.jsonl:2"),
    case("hfpairs-wrong-layout", "llara.hfpairs", "--dataset", "{d}/wronglayout.jsonl", "--output",
         "{d}/out/h4.jsonl", names="{d}/wronglayout.jsonl:1"),
    # --- llara.basemodel
    case("basemodel-missing-corpus", "llara.basemodel", "--corpus", "{d}/missing.parquet", "--output",
         "{d}/out/bm1", names="{d}/missing.parquet", heavy=True),
    case("basemodel-invalid-json-line", "llara.basemodel", "--corpus", "{d}/badjson.jsonl", "--output",
         "{d}/out/bm2", names="{d}/badjson.jsonl:2", heavy=True),
    case("basemodel-vocab-too-small", "llara.basemodel", "--corpus", "{d}/wiki-ok.jsonl", "--output",
         "{d}/out/bm3", "--vocab-size", "10", names="--vocab-size", heavy=True),
    # --- llara.launch: its own command line
    case("launch-no-command", "llara.launch", "--name", "x", "--folder", "{d}/out/jobs", names="after --"),
    case("launch-missing-folder", "llara.launch", "--name", "x", "--", "true", names="--folder"),
    # --- the other stages: a path that does not exist
    case("search-missing-shards", "llara.search", "--query-dir", "{d}/noq", "--corpus-dir", "{d}/noc",
         "--output", "{d}/out/run.txt", "--tag", "t", names=("{d}/noq", "{d}/noc")),
    case("score-missing-qrels", "llara.score", "--qrels", "{d}/no.tsv", "--run", "{d}/no.run", "--output",
         "{d}/out/m.json", names=("{d}/no.tsv", "{d}/no.run")),
    case("encode-missing-model", "llara.encode", "--encoder", "hf", "--model", "{d}/nomodel", "--beir-dir",
         "{d}/beir-ok", "--what", "corpus", "--output", "{d}/out/enc", names="{d}/nomodel", heavy=True),
    case("bm25-missing-folder", "llara.bm25", "--beir-dir", "{d}/nobeir", "--output", "{d}/out/bm25.run",
         names="{d}/nobeir"),
    case("mine-missing-pairs", "llara.mine", "--pairs", "{d}/nope.jsonl", "--negatives", "none", "--output",
         "{d}/out/mined.jsonl", names="{d}/nope.jsonl"),
    case("tables-missing-metrics", "llara.tables", "--metrics", "{d}/nometrics.json", "--output-dir",
         "{d}/out/tables", names="{d}/nometrics.json"),
    case("adapt-missing-train-file", "llara.adapt", "--model_name_or_path", "{d}/nomodel", "--train_file",
         "{d}/nope.jsonl", "--output_dir", "{d}/out/adapt", "--max_steps", "1",
         names=("{d}/nope.jsonl", "{d}/nomodel"), heavy=True),
    case("finetune-missing-train-file", "llara.finetune", "--model_name_or_path", "{d}/nomodel", "--train_file",
         "{d}/nope.jsonl", "--output_dir", "{d}/out/finetune", "--max_steps", "1",
         names=("{d}/nope.jsonl", "{d}/nomodel"), heavy=True),
    case("st-missing-checkpoint", "llara.st", "--model", "{d}/nomodel", "--output", "{d}/out/st",
         names="{d}/nomodel", heavy=True),
]  # fmt: skip


def write_jsonl(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def write_beir(root: Path, corpus=None, queries=None, qrels=None) -> None:
    (root / "qrels").mkdir(parents=True)
    docs = [
        {"_id": "d1", "title": "Nile", "text": "a river"},
        {"_id": "d2", "title": "", "text": "a mountain"},
    ]
    write_jsonl(root / "corpus.jsonl", docs if corpus is None else corpus)
    write_jsonl(root / "queries.jsonl", [{"_id": "q1", "text": "river"}] if queries is None else queries)
    (root / "qrels" / "test.tsv").write_text(
        "\n".join(qrels or ["query-id\tcorpus-id\tscore", "q1\td1\t1"]) + "\n"
    )


def make_bad_inputs(d: Path) -> None:
    (d / "out").mkdir()
    (d / "afile.txt").write_text("a file, not a folder\n")
    (d / "empty.jsonl").write_text("")
    write_jsonl(d / "badjson.jsonl", [WIKI_ROW, '{"id": "2", "title": "x", "text": unquoted}'])
    write_jsonl(d / "nocols.jsonl", [{"body": "text without a title or text column"}])
    (d / "notparquet.parquet").write_text("this is not a parquet file\n")
    write_jsonl(d / "wiki-ok.jsonl", [{**WIKI_ROW, "id": str(i)} for i in range(3)])
    write_jsonl(d / "wronglayout.jsonl", [{"query": "q", "pos": ["p"], "neg": []}])
    tevatron = {"query": "q", "positive_passages": [{"title": "", "text": "p"}], "negative_passages": []}
    write_jsonl(d / "badtevatron.jsonl", [tevatron, '{"query": "q2", positive_passages: []}'])
    write_beir(d / "beir-ok")
    write_beir(d / "beir-emptycorpus", corpus=[])
    write_beir(d / "beir-badqueries", queries=[{"_id": "q1", "text": "river"}, '{"_id": "q2", "text": '])
    write_beir(d / "beir-badqrels", qrels=["query-id\tcorpus-id\tscore", "q1\td1"])
    (d / "cache" / "scifact").mkdir(parents=True)  # not written by a download (no marker)


def run_case(c: Case, d: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    argv = [a.replace("{d}", str(d)) for a in c.argv]
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=d, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, Future]]:
    d = tmp_path_factory.mktemp("bad-inputs")
    make_bad_inputs(d)
    pool = ThreadPoolExecutor(max_workers=3)
    ordered = sorted(CASES, key=lambda c: not c.heavy)  # the slow imports first, the rest alongside
    futures = {c.id: (d, pool.submit(run_case, c, d)) for c in ordered}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def params():
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=f"pending: {c.pending}")] if c.pending else []
        yield pytest.param(c, id=c.id, marks=marks)


@pytest.mark.parametrize("c", params())
def test_bad_input_is_one_error_line_and_exit_status_2(c: Case, runs):
    d, future = runs[c.id]
    done = future.result()
    shown = f"exit status {done.returncode}; stderr:\n{done.stderr[-3000:]}"
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr, shown
    assert done.returncode == 2, shown
    assert lines and lines[-1].startswith("error:"), shown
    names = [n.replace("{d}", str(d)) for n in c.names]
    assert any(n in lines[-1] for n in names), f"the last line names none of {names}: {lines[-1]}"
    assert not list((d / "out").glob("*.partial")) and not list((d / "out").glob(".*.partial"))
