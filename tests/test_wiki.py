"""llara.wiki: sentence splitting, chunking, pairs, sources and the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llara.io import DataError  # noqa: E402
from llara.wiki import (  # noqa: E402
    Article,
    build_pairs,
    chunk_article,
    iter_articles,
    iter_pairs,
    main,
    split_sentences,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_file(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"{path} is missing: put the project's shared/ folder beside the repository to run this test"
        )
    return path


def sentence(tag: str, i: int, words: int) -> str:
    """A sentence of exactly ``words`` words, recognisable by its first word."""
    return " ".join([f"{tag.capitalize()}{i}", *[f"w{tag}{i}x{j}" for j in range(words - 1)]]) + "."


def make_text(tag: str, lengths: list[int], per_line: int = 3) -> tuple[str, list[str]]:
    sents = [sentence(tag, i, n) for i, n in enumerate(lengths)]
    lines = [" ".join(sents[i : i + per_line]) for i in range(0, len(sents), per_line)]
    return "\n".join(lines), sents


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- sentences ---------------------------------------------------------------------------------


def test_split_sentences_keeps_abbreviations_initials_and_numbers():
    text = (
        'Dr. Smith met J. R. R. Tolkien in the U.S. Army. It was 3.5 km long! "Why?" she asked. '
        "He left in Jan. 1990 e.g. by train.\nHeading.\nLast line"
    )
    assert split_sentences(text) == [
        "Dr. Smith met J. R. R. Tolkien in the U.S. Army.",
        "It was 3.5 km long!",
        '"Why?" she asked.',
        "He left in Jan. 1990 e.g. by train.",
        "Heading.",
        "Last line",
    ]


def test_split_sentences_needs_a_capital_after_the_stop():
    assert split_sentences("pH is 7. it stays. Then it rises.") == ["pH is 7. it stays.", "Then it rises."]


# --- chunks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_words", [11, 12, 20, 64])
def test_chunks_are_whole_consecutive_sentences_within_budget(chunk_words):
    lengths = [3, 7, 2, 9, 4, 4, 11, 1, 6, 8]  # no sentence longer than the budget
    text, sents = make_text("a", lengths)
    chunks = chunk_article(text, chunk_words)
    assert " ".join(chunks) == " ".join(sents)  # nothing lost, order kept
    runs = [split_sentences(c) for c in chunks]
    assert [s for run in runs for s in run] == sents  # every boundary falls between sentences
    assert all(len(c.split()) <= chunk_words for c in chunks)
    for left, right in zip(runs, runs[1:], strict=False):  # greedy: the next sentence did not fit
        assert sum(len(s.split()) for s in left) + len(right[0].split()) > chunk_words


def test_only_an_overlong_sentence_is_cut():
    text, sents = make_text("b", [4, 25, 3])
    chunks = chunk_article(text, 10)
    assert chunks[0] == sents[0]
    # the 25-word sentence becomes 10 + 10 + 5 words; the next sentence may join its tail
    assert [len(c.split()) for c in chunks] == [4, 10, 10, 8]
    assert " ".join(chunks[1:]) == f"{sents[1]} {sents[2]}"


def test_title_is_prepended_and_counted():
    text, _ = make_text("c", [4, 4])
    assert chunk_article(text, 100, title="My Title")[0].startswith("My Title C0 ")
    assert chunk_article(text, 6, title="My Title") == [
        "My Title C0 wc0x0 wc0x1 wc0x2.",
        "C1 wc1x0 wc1x1 wc1x2.",
    ]


def test_chunk_words_must_be_positive():
    with pytest.raises(ValueError, match="chunk_words must be >= 1"):
        chunk_article("A b.", 0)


# --- pairs -------------------------------------------------------------------------------------


def test_pairs_are_consecutive_within_an_article_and_never_cross():
    text_a, _ = make_text("a", [5] * 9)
    text_b, _ = make_text("b", [5] * 7)
    text_c, _ = make_text("c", [5])  # one chunk only: no pair
    articles = [Article("A", "", text_a), Article("C", "", text_c), Article("B", "", text_b)]
    pairs = list(iter_pairs(articles, chunk_words=10, title_prefix=False))
    for art in articles:
        chunks = chunk_article(art.text, 10)
        mine = [p for p in pairs if p.article_id == art.id]
        assert [(p.input, p.output_predict) for p in mine] == list(zip(chunks, chunks[1:], strict=False))
    assert {p.article_id for p in pairs} == {"A", "B"}
    for p in pairs:  # words are tagged by article: a pair never mixes two
        tags = {w[0].lower() for w in (p.input + " " + p.output_predict).split()}
        assert tags in ({"a", "w"}, {"b", "w"})
        assert {w[1] for w in (p.input + " " + p.output_predict).split() if w.startswith("w")} == {
            p.article_id.lower()
        }
    row = pairs[0].row()
    assert list(row) == ["input", "output_summarize", "output_predict"]
    assert row["input"] == row["output_summarize"]


def test_min_chunk_words_skips_pairs_with_a_short_chunk():
    text, _ = make_text("a", [8, 8, 2])
    pairs = list(iter_pairs([Article("A", "", text)], 8, title_prefix=False, min_chunk_words=3))
    assert [(len(p.input.split()), len(p.output_predict.split())) for p in pairs] == [(8, 8)]


# --- the stage on files ------------------------------------------------------------------------


@pytest.fixture
def small_parquet(tmp_path) -> Path:
    rows = []
    for k, tag in enumerate("abcdef"):
        text, _ = make_text(tag, [6] * (3 + 2 * k))
        rows.append({"id": f"id{k}", "url": f"u{k}", "title": f"Title {tag}", "text": text})
    rows.append({"id": "empty", "url": "u", "title": "Empty", "text": None})
    return write_parquet(tmp_path / "wiki.parquet", rows)


def test_round_trip_small_parquet(small_parquet, tmp_path):
    out = tmp_path / "out" / "pairs.jsonl"
    config = build_pairs(small_parquet, out, chunk_words=12, shuffle=False)
    rows = read_rows(out)
    assert config["counts"] == {
        "articles_read": 7,
        "articles_with_pairs": 6,
        "pairs_seen": len(rows),
        "rows_written": len(rows),
    }
    saved = json.loads((tmp_path / "out" / "pairs.jsonl.config.json").read_text())
    assert saved["args"]["chunk_words"] == 12 and saved["counts"]["rows_written"] == len(rows)
    expected = []
    for art in iter_articles(small_parquet):
        chunks = chunk_article(art.text, 12, art.title)
        expected += [
            {"input": a, "output_summarize": a, "output_predict": b}
            for a, b in zip(chunks, chunks[1:], strict=False)
        ]
    assert rows == expected
    assert sorted(p.name for p in out.parent.iterdir()) == ["pairs.jsonl", "pairs.jsonl.config.json"]


def test_shuffle_is_seeded_and_caps_rows(small_parquet, tmp_path):
    build_pairs(small_parquet, tmp_path / "p.jsonl", 12, shuffle=False)
    plain = read_rows(tmp_path / "p.jsonl")
    build_pairs(small_parquet, tmp_path / "s0.jsonl", 12, seed=0)
    build_pairs(small_parquet, tmp_path / "s0b.jsonl", 12, seed=0)
    build_pairs(small_parquet, tmp_path / "s1.jsonl", 12, seed=1)
    s0, s1 = read_rows(tmp_path / "s0.jsonl"), read_rows(tmp_path / "s1.jsonl")
    assert (tmp_path / "s0.jsonl").read_bytes() == (tmp_path / "s0b.jsonl").read_bytes()
    assert s0 != s1 and sorted(map(json.dumps, s0)) == sorted(map(json.dumps, plain))
    capped = build_pairs(small_parquet, tmp_path / "c.jsonl", 12, seed=0, max_rows=5)
    assert read_rows(tmp_path / "c.jsonl") == s0[:5] and capped["counts"]["rows_written"] == 5
    build_pairs(small_parquet, tmp_path / "c2.jsonl", 12, shuffle=False, max_rows=5, max_articles=3)
    assert read_rows(tmp_path / "c2.jsonl") == plain[:5]


def test_shuffle_spill_handles_skipped_pairs(tmp_path):
    """With min_chunk_words some pairs are skipped, so chunks are not always shared between pairs."""
    rows = []
    for k, tag in enumerate("ab"):
        text, _ = make_text(tag, [6, 6, 1, 6, 6, 2, 6] * (k + 1), per_line=1)
        rows.append({"id": f"id{k}", "title": "", "text": text})
    src = write_parquet(tmp_path / "w.parquet", rows)
    kw = dict(chunk_words=6, title_prefix=False, min_chunk_words=3)
    build_pairs(src, tmp_path / "plain.jsonl", shuffle=False, **kw)
    config = build_pairs(src, tmp_path / "shuf.jsonl", seed=4, **kw)
    plain, shuf = read_rows(tmp_path / "plain.jsonl"), read_rows(tmp_path / "shuf.jsonl")
    assert sorted(map(json.dumps, plain)) == sorted(map(json.dumps, shuf)) and plain != shuf
    assert config["counts"]["pairs_seen"] == len(plain) == 2 + 5  # chunk sizes 6 6 1 6 6 2 6 (x2 in b)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "plain.jsonl",
        "plain.jsonl.config.json",
        "shuf.jsonl",
        "shuf.jsonl.config.json",
        "w.parquet",
    ]


def test_jsonl_source_and_folder_source(small_parquet, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    arts = list(iter_articles(small_parquet))
    with open(folder / "a.jsonl", "w") as fh:
        for a in arts:
            fh.write(json.dumps({"id": a.id, "title": a.title, "text": a.text}) + "\n")
    assert list(iter_articles(folder / "a.jsonl")) == arts
    assert list(iter_articles(folder, max_articles=2)) == arts[:2]


def test_hf_source_is_streamed_with_name_and_config(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return iter([{"id": "1", "url": "u", "title": "T", "text": "A b. C d."}] * 5)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert len(list(iter_articles("hf:20231101.en", max_articles=3))) == 3
    list(iter_articles("hf:other/wiki:20231101.fr", max_articles=1))
    assert calls == [
        ("wikimedia/wikipedia", "20231101.en", "train", True),
        ("other/wiki", "20231101.fr", "train", True),
    ]


def test_real_sample_first_200_articles(tmp_path):
    sample = shared_file("data", "wikipedia", "enwiki-sample.parquet")
    out = tmp_path / "real.jsonl"
    config = build_pairs(sample, out, chunk_words=480, max_articles=200, shuffle=False)
    rows = read_rows(out)
    assert config["counts"]["articles_read"] == 200 and len(rows) > 20
    for row in rows:
        assert set(row) == {"input", "output_summarize", "output_predict"}
        assert 0 < len(row["input"].split()) <= 480 and 0 < len(row["output_predict"].split()) <= 480
    # within an article, row k's target is row k+1's input
    chained = sum(a["output_predict"] == b["input"] for a, b in zip(rows, rows[1:], strict=False))
    assert chained >= len(rows) - config["counts"]["articles_with_pairs"]
    non_final = [r["input"] for r in rows]
    assert sum(len(t.split()) for t in non_final) / len(non_final) > 400  # chunks are "about 480 words"


# --- bad inputs --------------------------------------------------------------------------------


def test_missing_columns_name_the_file_and_the_columns(tmp_path):
    path = write_parquet(tmp_path / "bad.parquet", [{"id": "1", "body": "x"}])
    with pytest.raises(
        DataError,
        match=r"bad\.parquet: missing column\(s\) \['title', 'text'\]; columns present: \['id', 'body'\]",
    ):
        list(iter_articles(path))
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"title": "a", "text": "b"}\n{"title": "a"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: missing column\(s\) \['text'\]"):
        list(iter_articles(jl))


def test_bad_files_fail_clearly(tmp_path):
    with pytest.raises(DataError, match="nope.parquet: not found"):
        list(iter_articles(tmp_path / "nope.parquet"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"unknown format '\.csv'"):
        list(iter_articles(tmp_path / "x.csv"))
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="broken.parquet: not a readable parquet file"):
        list(iter_articles(tmp_path / "broken.parquet"))
    (tmp_path / "broken.jsonl").write_text('{"title": "a", "text": "b"}\n{"title": \n')
    with pytest.raises(DataError, match=r"broken\.jsonl:2: malformed JSON .* column"):
        list(iter_articles(tmp_path / "broken.jsonl"))
    (tmp_path / "types.jsonl").write_text('{"title": "a", "text": 3}\n')
    with pytest.raises(DataError, match=r"types\.jsonl:1: field 'text' must be a string"):
        list(iter_articles(tmp_path / "types.jsonl"))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(DataError, match="holds no .parquet or .jsonl"):
        list(iter_articles(tmp_path / "emptydir"))


def test_cli(small_parquet, tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    assert (
        main(["--source", str(small_parquet), "--output", str(out), "--chunk-words", "12", "--seed", "3"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["rows_written"] == len(read_rows(out))
    assert json.loads((tmp_path / "cli.jsonl.config.json").read_text())["args"]["seed"] == 3
    ordered = tmp_path / "ordered.jsonl"
    assert (
        main(
            [
                "--source",
                str(small_parquet),
                "--output",
                str(ordered),
                "--chunk-words",
                "12",
                "--shuffle",
                "false",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert read_rows(ordered) == [p.row() for p in iter_pairs(iter_articles(small_parquet), 12)]
    assert main(["--source", str(tmp_path / "missing.parquet"), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "missing.parquet: not found" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_a_source_without_pairs_is_an_error_and_writes_nothing(tmp_path):
    """An empty source, or one whose articles are all one chunk, is bad input (exit 2), not an empty
    pairs file that adaptation would fail on later."""
    out = tmp_path / "pairs.jsonl"
    for rows, shuffle in (([], True), ([{"id": "1", "title": "A", "text": "One short sentence."}], False)):
        src = tmp_path / "src.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(DataError, match=rf"{src}: no pairs: {len(rows)} article\(s\) read"):
            build_pairs(src, out, chunk_words=480, shuffle=shuffle)
        assert not out.exists() and not (tmp_path / "pairs.jsonl.config.json").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["src.jsonl"]
