"""llara.synthetic: determinism, layout, answerability, held-out split, lexical difficulty."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from llara.synthetic import generate, main
from llara.wiki import chunk_article, iter_articles

SMALL = dict(n_articles=60, n_corpus_articles=40, n_train_queries=30, n_test_queries=20)
DATA_FILES = (
    "wiki.parquet",
    "beir/corpus.jsonl",
    "beir/queries.jsonl",
    "beir/qrels/train.tsv",
    "beir/qrels/test.tsv",
)


def make(root: Path, seed: int = 0, **sizes) -> Path:
    generate(seed, root / "wiki.parquet", root / "beir", **{**SMALL, **sizes})
    return root


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def qrels(path: Path) -> list[tuple[str, str, int]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "query-id\tcorpus-id\tscore"
    return [(q, d, int(s)) for q, d, s in (line.split("\t") for line in lines[1:])]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return make(tmp_path_factory.mktemp("syn"))


@pytest.fixture(scope="module")
def default(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn-default")
    generate(0, root / "wiki.parquet", root / "beir")  # the grid's default sizes
    return root


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
    again = make(tmp_path / "again")
    other = make(tmp_path / "other", seed=1)
    for name in DATA_FILES:
        assert (small / name).read_bytes() == (again / name).read_bytes(), name
        assert (small / name).read_bytes() != (other / name).read_bytes(), name


def test_pretraining_parquet_has_the_wikipedia_layout(small):
    df = pd.read_parquet(small / "wiki.parquet")
    assert list(df.columns) == ["id", "url", "title", "text"] and len(df) == SMALL["n_articles"]
    assert df["id"].is_unique and df["title"].is_unique and df["text"].str.len().min() > 100
    first = df["text"][0].split("\n")
    assert len(first) == 7 and all(line.endswith(".") for line in first)  # lead + 3 x (heading, paragraph)
    articles = list(iter_articles(small / "wiki.parquet"))  # llara.wiki reads it unchanged
    assert len(articles) == len(df)
    assert sum(len(chunk_article(a.text, 64, a.title)) >= 2 for a in articles) > len(articles) / 2
    config = json.loads((small / "wiki.parquet.config.json").read_text())
    assert config["args"]["n_articles"] == SMALL["n_articles"] and config["counts"]["articles"] == len(df)


def test_entity_is_named_only_in_the_lead(small):
    for a in iter_articles(small / "wiki.parquet"):
        lead, *sections = a.text.split("\n")
        assert a.title in lead
        assert all(a.title not in s for s in sections), a.title


def test_beir_folder_is_well_formed(small):
    beir = small / "beir"
    corpus, queries = jsonl(beir / "corpus.jsonl"), jsonl(beir / "queries.jsonl")
    assert all(set(d) == {"_id", "title", "text"} and d["text"] and d["title"] for d in corpus)
    assert all(set(q) == {"_id", "text", "metadata"} and q["text"].endswith("?") for q in queries)
    doc_ids, qids = [d["_id"] for d in corpus], [q["_id"] for q in queries]
    assert len(set(doc_ids)) == len(doc_ids) == 4 * SMALL["n_corpus_articles"]
    assert len(set(qids)) == len(qids) == SMALL["n_train_queries"] + SMALL["n_test_queries"]
    train, test = qrels(beir / "qrels" / "train.tsv"), qrels(beir / "qrels" / "test.tsv")
    assert len(train) == SMALL["n_train_queries"] and len(test) == SMALL["n_test_queries"]
    for q, d, score in train + test:
        assert q in qids and d in doc_ids and score == 1
    assert not {q for q, _, _ in train} & {q for q, _, _ in test}
    assert not {d for _, d, _ in train} & {d for _, d, _ in test}  # a paragraph serves one query
    meta = json.loads((beir / "synthetic.json").read_text())
    assert meta["beir_counts"]["corpus_docs"] == len(corpus)


def test_beir_folder_loads_with_the_project_loader(small):
    from llara import beir

    data = beir.load_beir(small / "beir", "test")
    assert len(data.queries) == SMALL["n_test_queries"] and len(data.corpus) == 4 * SMALL["n_corpus_articles"]


def test_queries_are_answerable_only_with_the_title(small):
    beir = small / "beir"
    docs = {d["_id"]: d for d in jsonl(beir / "corpus.jsonl")}
    queries = {q["_id"]: q for q in jsonl(beir / "queries.jsonl")}
    for q, d, _ in qrels(beir / "qrels" / "train.tsv") + qrels(beir / "qrels" / "test.tsv"):
        doc, query = docs[d], queries[q]
        assert query["metadata"]["answer"] in doc["text"]  # the relevant passage states the answer
        assert query["metadata"]["answer"] not in query["text"]
        assert doc["title"] in query["text"]  # the query names the entity ...
        assert doc["title"] not in doc["text"]  # ... which the passage text never does


def test_retrieval_entities_are_held_out_from_pretraining(small):
    pretrain = pd.read_parquet(small / "wiki.parquet")
    text = "\n".join(pretrain["title"] + "\n" + pretrain["text"])
    titles = {d["title"] for d in jsonl(small / "beir" / "corpus.jsonl")}
    assert titles and not {t for t in titles if t in text}


def tfidf_ndcg10(beir: Path, split: str, use_title: bool = True) -> float:
    """Mean NDCG@10 of a plain TF-IDF ranking (log tf, idf, cosine); pure Python."""
    tok = lambda text: re.findall(r"[a-z0-9]+", text.lower())  # noqa: E731
    docs = jsonl(beir / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in jsonl(beir / "queries.jsonl")}
    tfs = [Counter(tok((d["title"] + " " if use_title else "") + d["text"])) for d in docs]
    df = Counter(w for tf in tfs for w in tf)
    idf = {w: math.log(len(docs) / c) for w, c in df.items()}
    vecs = []
    for tf in tfs:
        v = {w: (1 + math.log(c)) * idf[w] for w, c in tf.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        vecs.append({w: x / norm for w, x in v.items()})
    judged: dict[str, set[str]] = {}
    for q, d, _ in qrels(beir / "qrels" / f"{split}.tsv"):
        judged.setdefault(q, set()).add(d)
    total = 0.0
    for q, relevant in judged.items():
        terms = {w: idf.get(w, 0.0) for w in set(tok(queries[q]))}
        scores = [sum(x * v.get(w, 0.0) for w, x in terms.items()) for v in vecs]
        top = sorted(range(len(docs)), key=lambda i: (-scores[i], i))[:10]
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(top) if docs[i]["_id"] in relevant)
        total += dcg / sum(1 / math.log2(r + 2) for r in range(len(relevant)))
    return total / len(judged)


def test_lexical_overlap_does_not_solve_the_task(default):
    """TF-IDF finds the entity (its title) but rarely the right paragraph of it; text alone fails."""
    beir = default / "beir"
    with_title = tfidf_ndcg10(beir, "test")
    text_only = tfidf_ndcg10(beir, "test", use_title=False)
    assert 0.2 < with_title < 0.75, with_title
    assert text_only < 0.15, text_only


def test_cli(tmp_path, capsys):
    args = ["--seed", "2", "--articles-out", str(tmp_path / "w.parquet"), "--beir-out", str(tmp_path / "b")]
    sizes = [
        "--n-articles",
        "30",
        "--n-corpus-articles",
        "20",
        "--n-train-queries",
        "10",
        "--n-test-queries",
        "5",
    ]
    assert main([*args, *sizes]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert (counts["articles"], counts["corpus_docs"], counts["queries"]) == (30, 80, 15)
    assert not list(tmp_path.glob("*.partial"))
    # asking for more queries than paragraphs fails clearly and leaves no output folder behind
    bad = ["--seed", "0", "--articles-out", str(tmp_path / "x.parquet"), "--beir-out", str(tmp_path / "xb")]
    assert main([*bad, "--n-corpus-articles", "5", "--n-test-queries", "100"]) == 2
    assert "raise --n-corpus-articles" in capsys.readouterr().err
    assert not (tmp_path / "xb").exists() and not (tmp_path / "xb.partial").exists()
    assert main([*bad, "--n-articles", "1"]) == 2
    assert "n_articles must be >= 2" in capsys.readouterr().err


def test_pretrain_set_leaves_the_retrieval_set_alone(small, tmp_path):
    """The fine-tuning set about the pre-training group: its own stream, train split only, other entities."""
    root = tmp_path / "with-pretrain"
    generate(
        0,
        root / "wiki.parquet",
        root / "beir",
        pretrain_beir_out=root / "pre",
        n_pretrain_queries=50,
        **SMALL,
    )
    for name in DATA_FILES:  # the retrieval set and the pre-training corpus are byte-identical
        assert (small / name).read_bytes() == (root / name).read_bytes(), name
    pre = root / "pre"
    assert sorted(p.name for p in (pre / "qrels").iterdir()) == ["train.tsv"]
    train = qrels(pre / "qrels" / "train.tsv")
    corpus = {d["_id"]: d for d in jsonl(pre / "corpus.jsonl")}
    assert len(train) == 50 and len({d for _, d, _ in train}) == 50  # one query per paragraph
    assert all(d in corpus for _, d, _ in train)
    # its documents are the pre-training articles' paragraphs: titles of the parquet, none of the test set
    wiki_titles = set(pd.read_parquet(root / "wiki.parquet")["title"])
    test_titles = {d["title"] for d in jsonl(root / "beir" / "corpus.jsonl")}
    assert {d["title"] for d in corpus.values()} == wiki_titles
    assert not wiki_titles & test_titles
    queries = {q["_id"]: q for q in jsonl(pre / "queries.jsonl")}
    for qid, doc, _ in train:  # the answer is in the judged paragraph, the name in the query
        assert queries[qid]["metadata"]["answer"] in corpus[doc]["text"]
        assert corpus[doc]["title"] in queries[qid]["text"]


def cli_sizes(n_articles: int) -> list[str]:
    """CLI flags of a small world: ``n_articles`` pre-training articles, 20 corpus articles, 5 + 5 queries."""
    sizes = {"n-articles": n_articles, "n-corpus-articles": 20, "n-train-queries": 5, "n-test-queries": 5}
    return [part for key, value in sizes.items() for part in (f"--{key}", str(value))]


def test_pretrain_set_too_many_queries(tmp_path, capsys):
    args = ["--articles-out", str(tmp_path / "w.parquet"), "--beir-out", str(tmp_path / "b")]
    small = cli_sizes(n_articles=10)
    pre = ["--pretrain-beir-out", str(tmp_path / "pre"), "--n-pretrain-queries", "1000"]
    assert main([*args, *small, *pre]) == 2
    assert "raise --n-articles or lower --n-pretrain-queries" in capsys.readouterr().err
    assert not (tmp_path / "pre").exists() and not (tmp_path / "b").exists()


def test_pretrain_set_alone_is_the_same_set(tmp_path, capsys):
    """The grid writes the fine-tuning set in its own rule: alone, it equals the one written beside the rest."""
    sizes = cli_sizes(n_articles=30)
    both = ["--articles-out", str(tmp_path / "w.parquet"), "--beir-out", str(tmp_path / "b")]
    assert (
        main([*sizes, *both, "--pretrain-beir-out", str(tmp_path / "p1"), "--n-pretrain-queries", "40"]) == 0
    )
    assert main([*sizes, "--pretrain-beir-out", str(tmp_path / "p2"), "--n-pretrain-queries", "40"]) == 0
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv"):
        assert (tmp_path / "p1" / name).read_bytes() == (tmp_path / "p2" / name).read_bytes(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "b",
        "p1",
        "p2",
        "w.parquet",
        "w.parquet.config.json",
    ]
    capsys.readouterr()
    assert main(sizes) == 2
    assert "nothing to write" in capsys.readouterr().err
