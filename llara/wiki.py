"""Wikipedia articles -> LLaRA pre-training pairs (method notes, section 5).

Each article (columns ``id, url, title, text`` of the HF dataset ``wikimedia/wikipedia``:
paragraphs separated by newlines, section titles on lines of their own) is cut into
sentence-aligned chunks of at most ``chunk_words`` whitespace-separated words, and every pair of
consecutive chunks of one article becomes one row, exactly the layout of the official toy file::

    {"input": chunk_i, "output_summarize": chunk_i, "output_predict": chunk_(i+1)}

Chunking rules
--------------
* A newline always ends a sentence (so a section title is a "sentence" of its own, as in the
  toy file, which keeps them). Inside a line, :func:`split_sentences` cuts after ``.``, ``!`` or
  ``?`` (plus any closing quotes/brackets) when whitespace and then a capital letter, an opening
  quote or bracket follow, except after a common abbreviation (``Dr.``, ``St.``, ``e.g.``,
  ``Jan.`` ...) or a single-letter initial (``J. R. R. Tolkien``). Dependency-free; it errs
  towards keeping text together, which only makes chunks slightly coarser.
* Sentences are packed greedily: a chunk takes sentences while its word count stays
  <= ``chunk_words``. A sentence is never split, except one that alone is longer than
  ``chunk_words``: it is cut into pieces of ``chunk_words`` words.
* By default the title is prepended to the first chunk (as its own sentence, counted in the
  budget), as in the toy file (``"Anarchism Anarchism is a ..."``).
* Whitespace inside a chunk is normalised to single spaces.
* Articles with fewer than two chunks give no rows; pairs never cross articles. With
  ``min_chunk_words`` > 0 a pair is skipped when either of its chunks is shorter.

Sources: a ``.parquet`` or ``.jsonl`` file, a folder of them, or the hub dataset itself as
``hf:wikimedia/wikipedia:20231101.en`` (``hf:20231101.en`` for short; streamed with
``datasets``). Parquet is read in record batches, never whole.

Order: by default every pair is spilled to a temporary file beside the output (each chunk once,
about 24 bytes of memory per pair), permuted with ``numpy.random.default_rng(seed)`` and cut at
``max_rows``: an exact, seeded, uniform sample whatever the corpus size. ``--shuffle false``
streams the rows in article order instead and stops reading at ``max_rows``.

CLI::

    python -m llara.wiki --source wiki.parquet --chunk-words 64 --output pairs.jsonl
    python -m llara.wiki --source hf:20231101.en --max-articles 100000 --chunk-words 480 \\
        --max-rows 50000 --seed 0 --output resources/pretrain/pairs.jsonl
    python -m llara.wiki --source enwiki-sample.parquet --shuffle false --max-rows 100 --output head.jsonl

The resolved arguments and counts go to ``<output>.config.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llara.io import DataError, atomic_path, cli_main, iter_jsonl, write_config

REQUIRED_COLUMNS = ("title", "text")
WIKI_COLUMNS = ("id", "url", "title", "text")
HF_DEFAULT_DATASET = "wikimedia/wikipedia"

# Words that end with a period without ending a sentence (compared lower-case, period removed).
ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof st mt ft jr sr rev gen col lt sgt capt cmdr adm gov sen rep hon fr
    vs etc approx ca cf al inc ltd co corp bros no nos vol vols pp ed eds fig figs op
    jan feb mar apr jun jul aug sep sept oct nov dec e.g i.e a.m p.m u.s u.k u.n""".split()
)
_BOUNDARY = re.compile(r"([.!?][\"'”’)\]]*)\s+(?=[\"'“‘(\[]?[A-Z])")
_DOTTED = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]$")  # U.S, e.g, i.e, U.S.A


@dataclass(frozen=True)
class Article:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Pair:
    """Chunk ``chunk_index`` of article ``article_id`` and the chunk that follows it."""

    article_id: str
    chunk_index: int
    input: str
    output_predict: str

    def row(self) -> dict[str, str]:
        return {"input": self.input, "output_summarize": self.input, "output_predict": self.output_predict}


# ---------------------------------------------------------------------------------------------
# Reading articles
# ---------------------------------------------------------------------------------------------


def _check_columns(where: str, present: Iterable[str]) -> None:
    present = list(present)
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {missing}; columns present: {present}. Expected the layout "
            f"of the HF dataset {HF_DEFAULT_DATASET} ({', '.join(WIKI_COLUMNS)}); rename the columns."
        )


def _article(where: str, row: dict[str, Any], index: int) -> Article:
    title, text = row.get("title"), row.get("text")
    for key, value in (("title", title), ("text", text)):
        if value is not None and not isinstance(value, str):
            raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    row_id = row.get("id")
    return Article(id=str(row_id) if row_id is not None else str(index), title=title or "", text=text or "")


def _iter_parquet(path: Path) -> Iterator[Article]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(
            f"{path}: not a readable parquet file ({exc}); expected {', '.join(WIKI_COLUMNS)}"
        ) from None
    names = pf.schema_arrow.names
    _check_columns(str(path), names)
    columns = [c for c in ("id", "title", "text") if c in names]
    index = 0
    for batch in pf.iter_batches(batch_size=512, columns=columns):
        for row in batch.to_pylist():
            yield _article(f"{path}: row {index}", row, index)
            index += 1


def _iter_jsonl(path: Path) -> Iterator[Article]:
    for index, (lineno, obj) in enumerate(iter_jsonl(path)):
        _check_columns(f"{path}:{lineno}", obj)
        yield _article(f"{path}:{lineno}", obj, index)


def _iter_hf(spec: str) -> Iterator[Article]:
    parts = spec.split(":")
    name, config = (HF_DEFAULT_DATASET, parts[0]) if len(parts) == 1 else (parts[0], ":".join(parts[1:]))
    import datasets

    ds = datasets.load_dataset(name, config, split="train", streaming=True)
    for index, row in enumerate(ds):
        if index == 0:
            _check_columns(f"hf:{name}:{config}", row)
        yield _article(f"hf:{name}:{config}: row {index}", row, index)


def _source_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".parquet", ".jsonl"))
        if not files:
            raise DataError(f"{path}: folder holds no .parquet or .jsonl files")
        return files
    if not path.exists():
        raise DataError(
            f"{path}: not found; give a .parquet or .jsonl file, a folder of them, or hf:NAME:CONFIG"
        )
    if path.suffix not in (".parquet", ".jsonl"):
        raise DataError(f"{path}: unknown format {path.suffix!r}; give a .parquet or .jsonl file")
    return [path]


def iter_articles(source: str | Path, max_articles: int | None = None) -> Iterator[Article]:
    """Articles from a parquet/JSONL file, a folder of them, or ``hf:[NAME:]CONFIG``; at most ``max_articles``."""
    if max_articles is not None and max_articles <= 0:
        return
    if isinstance(source, str) and source.startswith("hf:"):
        streams: Iterable[Iterator[Article]] = [_iter_hf(source[3:])]
    else:
        files = _source_files(Path(source))
        streams = (_iter_parquet(f) if f.suffix == ".parquet" else _iter_jsonl(f) for f in files)
    count = 0
    for stream in streams:
        for article in stream:
            yield article
            count += 1
            if max_articles is not None and count >= max_articles:
                return


# ---------------------------------------------------------------------------------------------
# Sentences and chunks
# ---------------------------------------------------------------------------------------------


def _is_abbreviation(word: str) -> bool:
    word = word.lstrip("\"'“‘([").rstrip(".")
    return len(word) == 1 and word.isalpha() or word.lower() in ABBREVIATIONS or bool(_DOTTED.match(word))


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: every line break ends one; see the module docstring for the rule."""
    sentences: list[str] = []
    for line in text.splitlines():
        start = 0
        for m in _BOUNDARY.finditer(line):
            before = line[start : m.start(1)].split()
            if m.group(1)[0] == "." and before and _is_abbreviation(before[-1]):
                continue
            sentences.append(line[start : m.end(1)].strip())
            start = m.end()
        tail = line[start:].strip()
        if tail:
            sentences.append(tail)
    return [s for s in sentences if s]


def chunk_words_of(sentences: Iterable[str], chunk_words: int) -> list[list[str]]:
    """Greedy sentence packing into word lists of at most ``chunk_words`` words."""
    if chunk_words < 1:
        raise DataError(f"chunk_words must be >= 1, got {chunk_words}; raise --chunk-words")
    chunks: list[list[str]] = []
    current: list[str] = []
    for sentence in sentences:
        words = sentence.split()
        if len(words) > chunk_words:  # the only case where a sentence is cut
            if current:
                chunks.append(current)
                current = []
            pieces = [words[i : i + chunk_words] for i in range(0, len(words), chunk_words)]
            chunks.extend(pieces[:-1])
            current = pieces[-1]
            continue
        if current and len(current) + len(words) > chunk_words:
            chunks.append(current)
            current = []
        current = current + words
    if current:
        chunks.append(current)
    return chunks


def chunk_article(text: str, chunk_words: int, title: str | None = None) -> list[str]:
    """Sentence-aligned chunks of one article (``title`` prepended as a first sentence if given)."""
    sentences = split_sentences(text)
    if title and title.strip():
        sentences = [title.strip(), *sentences]
    return [" ".join(words) for words in chunk_words_of(sentences, chunk_words)]


def iter_pairs(
    articles: Iterable[Article], chunk_words: int, title_prefix: bool = True, min_chunk_words: int = 0
) -> Iterator[Pair]:
    """Consecutive-chunk pairs, article by article, in order."""
    for article in articles:
        chunks = chunk_article(article.text, chunk_words, article.title if title_prefix else None)
        for i in range(len(chunks) - 1):
            if min_chunk_words and min(len(chunks[i].split()), len(chunks[i + 1].split())) < min_chunk_words:
                continue
            yield Pair(article.id, i, chunks[i], chunks[i + 1])


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------


@dataclass
class _Counter:
    """Counts articles and pairs as they stream past (for the config JSON)."""

    articles: int = 0
    articles_with_pairs: int = 0
    pairs: int = 0
    _last_id: str | None = None

    def articles_of(self, articles: Iterable[Article]) -> Iterator[Article]:
        for article in articles:
            self.articles += 1
            yield article

    def pairs_of(self, pairs: Iterable[Pair]) -> Iterator[Pair]:
        for pair in pairs:
            self.pairs += 1
            if pair.article_id != self._last_id or pair.chunk_index == 0:
                self.articles_with_pairs += 1
                self._last_id = pair.article_id
            yield pair


class SpilledPairs:
    """Pairs kept in a temporary file, each chunk written once, indexed by byte offsets.

    Memory stays at about 24 bytes per pair however large the corpus (a full Wikipedia dump has
    about 10M pairs), so the whole stream can be shuffled exactly. Chunks are written in stream
    order, so the target of pair ``k`` is always the chunk after its input.
    """

    def __init__(self, folder: Path) -> None:
        self.file = tempfile.TemporaryFile(dir=folder)
        self.starts, self.lengths, self.inputs = array("q"), array("q"), array("q")
        self._offset = 0
        self._last: str | None = None

    def _write(self, text: str) -> None:
        data = text.encode("utf-8")
        self.starts.append(self._offset)
        self.lengths.append(len(data))
        self.file.write(data)
        self._offset += len(data)

    def add(self, pair: Pair) -> None:
        if pair.input is not self._last:  # not the previous pair's target: a new run of chunks
            self._write(pair.input)
        self.inputs.append(len(self.starts) - 1)
        self._write(pair.output_predict)
        self._last = pair.output_predict

    def _chunk(self, i: int) -> str:
        self.file.seek(self.starts[i])
        return self.file.read(self.lengths[i]).decode("utf-8")

    def __len__(self) -> int:
        return len(self.inputs)

    def rows(self, order: Iterable[int]) -> Iterator[dict[str, str]]:
        for k in order:
            text = self._chunk(self.inputs[k])
            yield {"input": text, "output_summarize": text, "output_predict": self._chunk(self.inputs[k] + 1)}

    def close(self) -> None:
        self.file.close()


def build_pairs(
    source: str | Path,
    output: str | Path,
    chunk_words: int = 480,
    max_articles: int | None = None,
    max_rows: int | None = None,
    seed: int = 0,
    shuffle: bool = True,
    title_prefix: bool = True,
    min_chunk_words: int = 0,
) -> dict[str, Any]:
    """Write the pairs JSONL atomically to ``output`` (+ ``<output>.config.json``); returns the config.

    With ``shuffle`` every pair of the source is spilled to a temporary file beside ``output``
    (:class:`SpilledPairs`), permuted with ``numpy.random.default_rng(seed)`` and the first
    ``max_rows`` written: a uniform sample in random order. Without it rows stream out in article
    order and reading stops at ``max_rows``.
    """
    t0 = time.perf_counter()
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"{output}: cannot create its folder ({exc.strerror or exc}); pick another --output"
        ) from None
    counter = _Counter()
    articles = counter.articles_of(iter_articles(source, max_articles))
    pairs = counter.pairs_of(iter_pairs(articles, chunk_words, title_prefix, min_chunk_words))
    rows_written = 0
    with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        if shuffle:
            spill = SpilledPairs(output.parent)
            try:
                for pair in pairs:
                    spill.add(pair)
                order = np.random.default_rng(seed).permutation(len(spill))[:max_rows]
                for row in spill.rows(order.tolist()):
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                    rows_written += 1
            finally:
                spill.close()
        else:
            for pair in pairs:
                fh.write(json.dumps(pair.row(), ensure_ascii=False) + "\n")
                rows_written += 1
                if max_rows is not None and rows_written >= max_rows:
                    break
        if not rows_written:  # nothing to pre-train on: fail before the empty file takes the name
            raise DataError(
                f"{source}: no pairs: {counter.articles} article(s) read, none long enough for two chunks "
                f"(--chunk-words {chunk_words}, --min-chunk-words {min_chunk_words}); give a source with "
                "longer articles, or lower --chunk-words / --min-chunk-words"
            )
    config = {
        "stage": "llara.wiki",
        "args": {
            "source": str(source),
            "output": str(output),
            "chunk_words": chunk_words,
            "max_articles": max_articles,
            "max_rows": max_rows,
            "seed": seed,
            "shuffle": shuffle,
            "title_prefix": title_prefix,
            "min_chunk_words": min_chunk_words,
        },
        "counts": {
            "articles_read": counter.articles,
            "articles_with_pairs": counter.articles_with_pairs,
            "pairs_seen": counter.pairs,
            "rows_written": rows_written,
        },
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }
    write_config(output, config)
    return config


def parse_bool(value: str) -> bool:
    """argparse type for ``--flag true|false`` (the form the workflow's ``flags()`` writes)."""
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _positive_or_none(value: str) -> int | None:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return n or None


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llara.wiki", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--source", required=True, help="a .parquet/.jsonl file, a folder of them, or hf:[NAME:]CONFIG"
    )
    p.add_argument("--output", required=True, type=Path, help="pairs JSONL to write")
    p.add_argument("--chunk-words", type=int, default=480, help="max words per chunk (default 480)")
    p.add_argument(
        "--max-articles", type=_positive_or_none, default=None, help="read at most N articles (0: all)"
    )
    p.add_argument("--max-rows", type=_positive_or_none, default=None, help="write at most N rows (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the row shuffle")
    p.add_argument(
        "--shuffle",
        type=parse_bool,
        nargs="?",
        const=True,
        default=True,
        help="true (default): seeded uniform shuffle of all pairs; false: article order, streamed",
    )
    p.add_argument(
        "--title-prefix",
        type=parse_bool,
        nargs="?",
        const=True,
        default=True,
        help="true (default): prepend the title to the first chunk, as the toy file does",
    )
    p.add_argument("--min-chunk-words", type=int, default=0, help="skip pairs with a chunk shorter than this")
    a = p.parse_args(argv)
    if a.chunk_words < 1:
        p.error("--chunk-words must be >= 1")
    config = build_pairs(
        source=a.source,
        output=a.output,
        chunk_words=a.chunk_words,
        max_articles=a.max_articles,
        max_rows=a.max_rows,
        seed=a.seed,
        shuffle=a.shuffle,
        title_prefix=a.title_prefix,
        min_chunk_words=a.min_chunk_words,
    )
    print(json.dumps({"output": str(a.output), **config["counts"], "elapsed_s": config["elapsed_s"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
