"""llara.io: atomic writes through links and into streams; located UTF-8 errors; data warnings."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from llara.io import (
    DataError,
    DataWarning,
    atomic_path,
    atomic_save_npy,
    atomic_write_json,
    atomic_write_text,
    cli_warnings,
    format_ids,
    iter_jsonl,
    iter_lines,
    output_target,
    warn_data,
    write_config,
)
from llara.runs import read_trec_run, write_trec_run

REPO = Path(__file__).resolve().parents[1]


def test_symlink_is_written_through_atomically_and_stays_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "run.trec"
    target.write_text("old\n")
    link = tmp_path / "link.trec"
    link.symlink_to(os.path.join("real", "run.trec"))  # a relative link
    write_trec_run(link, {"q1": {"d1": 1.0}}, "t")
    assert link.is_symlink() and os.readlink(link) == os.path.join("real", "run.trec")
    assert target.read_text() == "q1 Q0 d1 1 1.0 t\n"
    assert read_trec_run(link) == {"q1": {"d1": 1.0}}
    # a failed write leaves the target and the link alone, and no temporary file in either folder
    with pytest.raises(RuntimeError), atomic_path(link) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "q1 Q0 d1 1 1.0 t\n" and link.is_symlink()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["link.trec", "real", "run.trec"]


def test_dangling_link_and_link_chain_create_the_final_target(tmp_path):
    final = tmp_path / "out" / "metrics.json"
    (tmp_path / "b").symlink_to(final)
    (tmp_path / "a").symlink_to(tmp_path / "b")
    atomic_write_json(tmp_path / "a", {"x": 1})
    assert json.loads(final.read_text()) == {"x": 1}
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match="levels of symbolic links"):
        atomic_write_text(loop, "x")
    with pytest.raises(DataError, match="is a folder"):
        atomic_write_text(tmp_path / "out", "x")


def test_fifo_is_streamed_to_not_replaced(tmp_path):
    fifo = tmp_path / "run.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_trec_run(fifo, {"q1": {"d1": 2.0, "d2": 1.0}}, "t")
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert got == [b"q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\n"]
    assert fifo.is_fifo()  # still a FIFO, not a regular file
    assert output_target(fifo) == ("stream", fifo)
    assert write_config(fifo, {"a": 1}) is None  # nothing is written beside a stream
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.fifo"]


def test_numpy_into_a_fifo(tmp_path):
    fifo = tmp_path / "vecs.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    atomic_save_npy(fifo, np.arange(6, dtype=np.float32).reshape(2, 3))
    reader.join(timeout=10)
    out = tmp_path / "copy.npy"
    out.write_bytes(got[0])
    np.testing.assert_array_equal(np.load(out), np.arange(6, dtype=np.float32).reshape(2, 3))
    assert fifo.is_fifo()


# These tests never write to the system's own /dev/stdout or /dev/null: run as root, a regression
# would replace them with regular files for every process on the machine. They write through links
# and device nodes made in tmp_path instead, which reach the same descriptors and devices.


def stdout_link(folder: Path) -> Path:
    """A private link to our stdout descriptor, as /dev/stdout is (``stdout -> /proc/self/fd/1``)."""
    link = folder / "stdout"
    link.symlink_to("/proc/self/fd/1")
    return link


def test_dash_and_stdout_links_write_to_stdout(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    link = stdout_link(tmp_path / "out")
    print("before")
    write_trec_run("-", {"q1": {"d1": 1.0}}, "t")
    print("after")
    atomic_write_json(link, {"k": 1})
    assert capsys.readouterr().out == 'before\nq1 Q0 d1 1 1.0 t\nafter\n{\n  "k": 1\n}\n'
    assert write_config("-", {"a": 1}) is None and write_config(link, {"a": 1}) is None
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out", "stdout"]  # no '-', no sidecars
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"
    for name in ("/dev/stdout", "/dev/stderr", "/proc/self/fd/1", "/dev/fd/1", "-"):  # read-only checks
        assert output_target(name)[0] == "stream", name


@pytest.mark.parametrize("name", ["link", "/proc/self/fd/1", "-"])
def test_stdout_redirected_to_a_file_is_appended_to_not_replaced(tmp_path, name):
    """``--output /dev/stdout > log``: the log keeps its inode and gets the bytes in order."""
    log = tmp_path / "log"
    target = str(stdout_link(tmp_path)) if name == "link" else name
    code = (
        "import sys; from llara.io import atomic_write_text; print('first', flush=True); "
        f"atomic_write_text({target!r}, 'artifact\\n'); print('last')"
    )
    with open(log, "w") as fh:
        inode = os.fstat(fh.fileno()).st_ino
        subprocess.run([sys.executable, "-c", code], stdout=fh, check=True, cwd=REPO)
    assert log.read_text() == "first\nartifact\nlast\n"
    assert log.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == (["log", "stdout"] if name == "link" else ["log"])


def test_a_failed_write_sends_nothing_to_stdout(capsys):
    with pytest.raises(RuntimeError), atomic_path("-") as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert capsys.readouterr().out == ""


def test_character_device_is_not_replaced(tmp_path):
    """A private null device (char 1:3, as /dev/null), and a link to it."""
    null = tmp_path / "null"
    try:
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here ({exc})")
    (tmp_path / "link").symlink_to(null)
    atomic_write_text(null, "nothing\n")
    atomic_write_text(tmp_path / "link", "nothing\n")
    assert stat.S_ISCHR(null.stat().st_mode) and (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "null"]


def test_non_utf8_lines_name_file_line_and_byte_offset(tmp_path):
    path = tmp_path / "corpus.jsonl"
    data = b'{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": "caf\xe9"}\n'  # latin-1 e-acute
    path.write_bytes(data)
    assert data.index(b"\xe9") == 28 + 26  # line 1 is 28 bytes; the byte is the 27th of line 2
    with pytest.raises(
        DataError, match=r"corpus\.jsonl:2: not UTF-8: byte 0xe9 at byte offset 54 of the file \(byte 27 of"
    ):
        list(iter_jsonl(path))
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"_id": "d1"}\r\n')
    assert list(iter_jsonl(bom)) == [(1, {"_id": "d1"})]
    assert [line for _, line in iter_lines(bom)] == ['{"_id": "d1"}\r\n']


def test_malformed_json_message_reads_once_at(tmp_path):
    path = tmp_path / "q.jsonl"
    for text, expected in [
        ('{"_id": "q1", "text": "unterminated}', "(Unterminated string starting at column 23)"),
        ('{"_id": "q1", "text": "tab\there"}', "(Invalid control character at column 27)"),
        ('{"_id": }', "(Expecting value at column 9)"),
    ]:
        path.write_text(text)  # no newline: inside a string it would be an invalid control character
        with pytest.raises(DataError) as err:
            list(iter_jsonl(path))
        assert f"q.jsonl:1: malformed JSON {expected}" in str(err.value)
        assert "at at" not in str(err.value)


def test_format_ids_and_cli_warnings(capsys):
    assert format_ids(["a", "b"]) == "a, b"
    assert format_ids([str(i) for i in range(5)], limit=2) == "0, 1 ... and 3 more"
    with pytest.warns(DataWarning, match="two empty"):
        warn_data("two empty")
    with cli_warnings():
        warn_data("shown plainly")
        warn_data("shown plainly")  # the CLI shows each one
        with pytest.warns(UserWarning, match="other"):
            warnings.warn("other", UserWarning, stacklevel=1)  # other warnings are left alone
    err = capsys.readouterr().err
    assert err == "warning: shown plainly\n" * 2
