"""BEIR loading (validation errors name file and line) and download (checksum, partial downloads)."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import threading
import zipfile
from pathlib import Path

import pytest

from llara import beir
from llara.beir import (
    BEIR_MD5,
    DownloadError,
    download_beir,
    join_title_text,
    load_beir,
    subsample,
    write_beir,
)
from llara.io import DataError, DataWarning

SHARED = Path(__file__).resolve().parents[2] / "shared"
SCIFACT = SHARED / "data" / "beir" / "scifact"


def write_folder(root: Path, corpus=None, queries=None, qrels=None, split="test") -> Path:
    corpus = corpus if corpus is not None else [
        {"_id": "d1", "title": "Rivers", "text": "The Nile is long."},
        {"_id": "d2", "title": "", "text": "  Mountains are high.  "},
        {"_id": "d3", "title": "Cities", "text": "Paris is a city."},
    ]  # fmt: skip
    queries = queries if queries is not None else [
        {"_id": "q1", "text": "long river"},
        {"_id": "q2", "text": "high mountain"},
        {"_id": "q3", "text": "unjudged query"},
    ]  # fmt: skip
    qrels = (
        qrels if qrels is not None else ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q2\td2\t2", "q2\td3\t0"]
    )
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
        (root / name).write_text("".join(line + "\n" for line in lines))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / f"{split}.tsv").write_text("\n".join(qrels) + "\n")
    return root


def test_load_joins_title_and_text_and_keeps_judged_queries(tmp_path):
    ds = load_beir(write_folder(tmp_path / "d"), "test")
    ids, texts = ds.corpus_items()
    assert ids == ["d1", "d2", "d3"]
    assert texts == ["Rivers The Nile is long.", "Mountains are high.", "Cities Paris is a city."]
    assert list(ds.queries) == ["q1", "q2"]  # q3 has no judgement in this split (as BEIR)
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d3": 0}}
    assert ds.meta == {
        "documents": 3,
        "queries_in_file": 3,
        "queries_judged": 2,
        "judgements": 3,
        "empty_documents": 0,
        "empty_queries": 0,
    }


def test_join_title_text_is_beirs():
    assert join_title_text("", " text ") == "text"
    assert join_title_text("T", "x") == "T x"
    assert join_title_text("T", "") == "T"


def test_qrels_header_is_optional(tmp_path):
    ds = load_beir(write_folder(tmp_path / "d", qrels=["q1\td1\t1"]), "test")
    assert ds.qrels == {"q1": {"d1": 1}}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"corpus": ['{"_id": "d1", "text": "ok"}', '{"_id": "d2", "text": oops}']}, r"corpus\.jsonl:2: malformed JSON"),
        ({"queries": ['{"_id": "q1", "text": "a"}', "[1, 2]"]}, r"queries\.jsonl:2: expected a JSON object"),
        ({"qrels": ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q9\td1\t1"]}, r"test\.tsv:3: query id 'q9' is not in queries"),
        ({"qrels": ["query-id\tcorpus-id\tscore", "q1\tdX\t1"]}, r"test\.tsv:2: document id 'dX' is not in corpus"),
        ({"qrels": ["query-id\tcorpus-id\tscore", "q1\td1"]}, r"test\.tsv:2: expected 3 tab-separated columns"),
        ({"qrels": ["query-id\tcorpus-id\tscore", "q1\td1\thigh"]}, r"test\.tsv:2: relevance score 'high'"),
        ({"qrels": ["q1\td1\t1", "q1\td1\t1"]}, r"test\.tsv:2: duplicate judgement"),
        ({"corpus": [{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}]}, r"corpus\.jsonl:2: duplicate document id 'd1' \(first seen on line 1\)"),
        ({"queries": [{"_id": "q1", "text": "a"}, {"_id": "q1", "text": "b"}]}, r"queries\.jsonl:2: duplicate query id 'q1'"),
        ({"corpus": []}, r"corpus\.jsonl: empty corpus"),
        ({"corpus": [{"_id": "d1", "title": "no text"}]}, r"corpus\.jsonl:1: missing field 'text'"),
        ({"corpus": [{"_id": "d1", "text": 3}]}, r"corpus\.jsonl:1: field 'text' must be a string"),
    ],
)  # fmt: skip
def test_bad_inputs_name_file_and_line(tmp_path, kwargs, match):
    root = write_folder(tmp_path / "d", **kwargs)
    with pytest.raises(DataError, match=match):
        load_beir(root, "test")


def test_missing_split_lists_available_ones(tmp_path):
    root = write_folder(tmp_path / "d")
    (root / "qrels" / "dev.tsv").write_text("q1\td1\t1\n")
    with pytest.raises(DataError, match=r"no qrels for split 'train'.*available splits .*: dev, test"):
        load_beir(root, "train")


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        load_beir(tmp_path / "nope", "test")
    root = write_folder(tmp_path / "d")
    (root / "corpus.jsonl").unlink()
    with pytest.raises(DataError, match=r"corpus\.jsonl: file not found"):
        load_beir(root, "test")


def test_subsample_is_deterministic_and_round_trips(tmp_path):
    corpus = [{"_id": f"d{i}", "title": f"t{i}", "text": f"text {i}"} for i in range(50)]
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(10)]
    qrels = [f"q{i}\td{i * 3}\t1" for i in range(10)]
    ds = load_beir(write_folder(tmp_path / "d", corpus, queries, qrels), "test")
    a, b = subsample(ds, 4, 5, seed=1), subsample(ds, 4, 5, seed=1)
    assert a == b and len(a.queries) == 4 and len(a.corpus) == 4 + 5
    assert all(d in a.corpus for rels in a.qrels.values() for d in rels)
    assert list(a.corpus) == [d for d in ds.corpus if d in a.corpus]  # original order kept
    assert subsample(ds, 4, 5, seed=2).queries != a.queries
    back = load_beir(write_beir(a, tmp_path / "sub"), "test")
    assert (back.corpus, back.queries, back.qrels) == (a.corpus, a.queries, a.qrels)


@pytest.mark.parametrize("name", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_check_cli_names_file_line_and_byte_offset_of_non_utf8(tmp_path, capsys, name):
    root = write_folder(tmp_path / "d")
    path = root / name
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = (
        lines[1].replace(b"\t", b"\t\xff", 1)
        if name.endswith(".tsv")
        else lines[1].replace(b'": "', b'": "\xff', 1)
    )
    path.write_bytes(b"".join(lines))
    offset = len(lines[0]) + lines[1].index(b"\xff")
    assert beir.main(["check", "--beir-dir", str(root), "--split", "test"]) == 2
    captured = capsys.readouterr()
    assert f"{path}:2: not UTF-8: byte 0xff at byte offset {offset} of the file" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_empty_texts_are_counted_and_warned_with_their_ids(tmp_path, capsys):
    corpus = [
        {"_id": "d1", "title": "Rivers", "text": "The Nile is long."},
        {"_id": "d2", "title": " ", "text": "  "},
        {"_id": "d3", "title": "Only a title", "text": ""},
    ]
    queries = [{"_id": "q1", "text": " "}, {"_id": "q2", "text": "high"}, {"_id": "q3", "text": ""}]
    root = write_folder(tmp_path / "d", corpus=corpus, queries=queries)  # q3 is not judged: not counted
    with pytest.warns(DataWarning) as record:
        ds = load_beir(root, "test")
    assert (ds.meta["empty_documents"], ds.meta["empty_queries"]) == (1, 1)
    messages = [str(w.message) for w in record]
    assert any("corpus.jsonl: 1 of 3 documents have an empty text (ids: d2)" in m for m in messages)
    assert any(
        "queries.jsonl: 1 of 2 queries judged in 'test' have an empty text (ids: q1)" in m for m in messages
    )
    assert beir.main(["check", "--beir-dir", str(root), "--split", "test"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["empty_documents"] == 1
    assert "warning: " in captured.err and "(ids: d2)" in captured.err and "(ids: q1)" in captured.err


def test_check_cli(tmp_path, capsys):
    root = write_folder(tmp_path / "d")
    assert beir.main(["check", "--beir-dir", str(root), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["queries_judged"] == 2
    assert beir.main(["check", "--beir-dir", str(root), "--split", "dev"]) == 2
    assert "available splits" in capsys.readouterr().err


def test_scifact_counts():
    if not SCIFACT.is_dir():
        pytest.skip(f"{SCIFACT} is missing: put the project's shared/ folder beside the repository")
    test = load_beir(SCIFACT, "test")
    assert test.meta == {
        "documents": 5183,
        "queries_in_file": 1109,
        "queries_judged": 300,
        "judgements": 339,
        "empty_documents": 0,
        "empty_queries": 0,
    }
    assert load_beir(SCIFACT, "train").meta["queries_judged"] == 809


# ---------------------------------------------------------------------------------------------
# download from a local HTTP server


def make_zip(name: str = "tiny") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{name}/corpus.jsonl", '{"_id": "d1", "title": "", "text": "hello"}\n')
        zf.writestr(f"{name}/queries.jsonl", '{"_id": "q1", "text": "hi"}\n')
        zf.writestr(f"{name}/qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return buf.getvalue()


@pytest.fixture
def server():
    """Serves ``files`` (path -> bytes) on 127.0.0.1; ``truncate`` paths send half the body only.

    Bounded: it shuts itself down after 60 s even if a test hangs.
    """
    files: dict[str, bytes] = {}
    truncate: set[str] = set()
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if self.path in truncate else body)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    timer = threading.Timer(60, httpd.shutdown)
    timer.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield {"base": base, "files": files, "truncate": truncate, "hits": hits}
    finally:
        timer.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_download_verifies_checksum_and_renames_into_place(tmp_path, server):
    data = make_zip()
    server["files"]["/tiny.zip"] = data
    cache = tmp_path / "cache"
    path = download_beir("tiny", cache, md5=hashlib.md5(data).hexdigest(), url=server["base"] + "/tiny.zip")
    assert path == cache / "tiny" and leftovers(cache) == ["tiny"]
    ds = load_beir(path, "test")
    assert ds.corpus == {"d1": {"title": "", "text": "hello"}}
    assert json.loads((path / beir.DOWNLOAD_MARKER).read_text())["md5"] == hashlib.md5(data).hexdigest()
    # a second call reuses the folder without touching the network
    again = download_beir("tiny", cache, md5=hashlib.md5(data).hexdigest(), url=server["base"] + "/tiny.zip")
    assert again == path and server["hits"] == ["/tiny.zip"]


def test_checksum_mismatch_keeps_nothing(tmp_path, server):
    server["files"]["/tiny.zip"] = make_zip()
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="checksum mismatch.*expected 0+"):
        download_beir("tiny", cache, md5="0" * 32, url=server["base"] + "/tiny.zip")
    assert leftovers(cache) == []


def test_truncated_download_keeps_nothing(tmp_path, server):
    data = make_zip()
    server["files"]["/tiny.zip"] = data
    server["truncate"].add("/tiny.zip")
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="incomplete|failed"):
        download_beir(
            "tiny", cache, md5=hashlib.md5(data).hexdigest(), url=server["base"] + "/tiny.zip", timeout=10
        )
    assert leftovers(cache) == []


def test_http_error_and_foreign_folder(tmp_path, server):
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="404"):
        download_beir("tiny", cache, md5="0" * 32, url=server["base"] + "/missing.zip")
    assert leftovers(cache) == []
    (cache / "tiny").mkdir(parents=True)
    with pytest.raises(DownloadError, match="not written by a completed download"):
        download_beir("tiny", cache, md5="0" * 32, url=server["base"] + "/tiny.zip")


def test_unknown_name_lists_known_ones(tmp_path):
    with pytest.raises(DataError, match=r"unknown BEIR dataset 'scifacts'; known: .*nfcorpus.*scifact"):
        download_beir("scifacts", tmp_path)
    assert BEIR_MD5["scifact"] == "5f7d1de60b170fc8027bb7898e2efca1"


def test_download_cli(tmp_path, server, capsys):
    data = make_zip("scifact")
    server["files"]["/scifact.zip"] = data
    argv = [
        "download",
        "--name",
        "scifact",
        "--cache-dir",
        str(tmp_path),
        "--url",
        server["base"] + "/scifact.zip",
    ]
    assert beir.main(argv) == 2  # the published md5 of the real archive does not match our tiny zip
    assert "checksum mismatch" in capsys.readouterr().err
    assert beir.main([*argv, "--md5", hashlib.md5(data).hexdigest()]) == 0
    assert Path(capsys.readouterr().out.strip()) == tmp_path / "scifact"


def test_hf_download_writes_a_validated_beir_folder(tmp_path):
    """BeIR/<name> on the hub, with the datasets functions replaced by in-memory tables."""
    tables = {
        ("BeIR/toy", "corpus", "corpus"): [{"_id": "d1", "title": "T", "text": "x"}, {"_id": 2, "title": None, "text": "y"}],
        ("BeIR/toy", "queries", "queries"): [{"_id": "q1", "text": "find x"}],
        ("BeIR/toy-qrels", None, "test"): [{"query-id": "q1", "corpus-id": "d1", "score": 1}],
    }  # fmt: skip
    calls = []

    def load_dataset(repo, config=None, split=None, revision=None):
        calls.append((repo, config, split, revision))
        return tables[(repo, config, split)]

    path = beir.download_beir_hf(
        "toy",
        tmp_path,
        revision="abc",
        load_dataset=load_dataset,
        split_names=lambda repo, revision: ["test"],
    )
    assert path == tmp_path / "toy-hf" and leftovers(tmp_path) == ["toy-hf"]
    ds = load_beir(path, "test")
    assert ds.corpus_items() == (["d1", "2"], ["T x", "y"]) and ds.qrels == {"q1": {"d1": 1}}
    assert calls[0] == ("BeIR/toy", "corpus", "corpus", "abc")
    assert beir.download_beir_hf("toy", tmp_path, load_dataset=None, split_names=lambda *a, **k: []) == path
    tables[("BeIR/toy-qrels", None, "test")] = [{"query-id": "q1", "corpus-id": "nope", "score": 1}]
    with pytest.raises(DataError, match="document id 'nope' is not in corpus"):
        beir.download_beir_hf(
            "toy", tmp_path / "c2", load_dataset=load_dataset, split_names=lambda *a, **k: ["test"]
        )
    assert leftovers(tmp_path / "c2") == []


def test_atomic_write_keeps_the_old_file_on_failure_and_follows_the_umask(tmp_path):
    from llara.io import atomic_path, atomic_write_text, current_umask

    target = atomic_write_text(tmp_path / "a.txt", "old")
    assert (target.stat().st_mode & 0o777) == 0o666 & ~current_umask()
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_folder_renames_when_complete_and_removes_a_failed_one(tmp_path):
    """One helper for the folders written atomically (synthetic, beir, basemodel; st and training)."""
    from llara.io import atomic_folder, current_umask

    dest = tmp_path / "sub" / "out"
    with atomic_folder(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.name.endswith(".partial") and not dest.exists()
        (tmp / "a.txt").write_text("one")
    assert (dest / "a.txt").read_text() == "one" and os.listdir(dest.parent) == ["out"]
    assert (dest.stat().st_mode & 0o777) == 0o777 & ~current_umask()  # not mkdtemp's 0700
    with pytest.raises(DataError, match="out exists; delete it"), atomic_folder(dest):
        pass
    with pytest.raises(RuntimeError), atomic_folder(dest, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("half")
        raise RuntimeError("crash while writing")
    assert os.listdir(dest) == ["a.txt"] and os.listdir(dest.parent) == ["out"]  # old one kept
    with atomic_folder(dest, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("two")
    assert os.listdir(dest) == ["b.txt"] and os.listdir(dest.parent) == ["out"]  # swapped, old gone
    staged = tmp_path / "staged"
    staged.mkdir()
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "s", staged=staged):
        raise RuntimeError("crash")
    assert staged.is_dir() and not (tmp_path / "s").exists()  # the caller's folder is left in place
    with atomic_folder(tmp_path / "s", staged=staged) as tmp:
        assert tmp == staged
    assert (tmp_path / "s").is_dir() and not staged.exists()
    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(DataError, match="cannot create a folder there"),
        atomic_folder(tmp_path / "file" / "o"),
    ):
        pass
