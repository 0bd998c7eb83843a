"""llara.fetch without network: the hub's listing and snapshot_download are replaced by fakes that
write a tiny model folder; the error messages are checked for what they tell the user to do."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest
from conftest import assert_bad_input, run_cli
from huggingface_hub import errors

from llara import fetch
from llara.io import DataError

REPO = "meta-llama/Llama-2-7b-hf"
# a Llama-2-like repository: sharded safetensors and the same weights as .bin, Meta's original/ copy
FILES = {
    "config.json": b'{"hidden_size": 32}',
    "generation_config.json": b"{}",
    "model-00001-of-00002.safetensors": b"s" * 100,
    "model-00002-of-00002.safetensors": b"t" * 50,
    "model.safetensors.index.json": b"{}",
    "pytorch_model-00001-of-00002.bin": b"b" * 100,
    "pytorch_model-00002-of-00002.bin": b"c" * 50,
    "pytorch_model.bin.index.json": b"{}",
    "tokenizer.model": b"spm",
    "tokenizer_config.json": b"{}",
    "special_tokens_map.json": b"{}",
    "original/consolidated.00.pth": b"o" * 150,
    "original/params.json": b"{}",
    "README.md": b"# card",
    "Responsible-Use-Guide.pdf": b"%PDF",
}
WANTED = [
    "config.json",
    "generation_config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "tokenizer_config.json",
]


class FakeHub:
    """repo_listing + snapshot_download of one fake repository; records the calls."""

    def __init__(self, files: dict[str, bytes] = FILES, commits: dict[str, str] | None = None):
        self.files = files
        self.commits = commits or {"main": "a" * 40, "v2": "b" * 40}
        self.downloads: list[dict] = []
        self.fail_after: int | None = None  # raise ConnectionError after writing this many files
        self.error: BaseException | None = None  # raise this from the listing

    def listing(self, repo_id: str, revision: str) -> fetch.Listing:
        if self.error is not None:
            raise self.error
        return fetch.Listing(self.commits.get(revision, revision), {k: len(v) for k, v in self.files.items()})

    def snapshot_download(self, repo_id, *, revision, local_dir, allow_patterns, **kw):
        import fnmatch

        written: list[str] = []
        self.downloads.append({"revision": revision, "patterns": list(allow_patterns), "written": written})
        wanted = [f for f in self.files if any(fnmatch.fnmatch(f, p) for p in allow_patterns)]
        meta = Path(local_dir) / ".cache" / "huggingface" / "download"
        meta.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(wanted):
            if self.fail_after is not None and i == self.fail_after:
                raise ConnectionError("connection reset by peer")
            path = Path(local_dir) / name
            if path.is_file() and path.stat().st_size == len(self.files[name]):
                continue  # complete already: the hub's local_dir download resumes like this
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.files[name])
            written.append(name)
            (meta / f"{Path(name).name}.metadata").write_text(revision)
        return str(local_dir)


@pytest.fixture
def hub(monkeypatch) -> FakeHub:
    fake = FakeHub()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # conftest sets it for the whole session
    monkeypatch.setattr(fetch, "repo_listing", fake.listing)
    monkeypatch.setattr(fetch, "snapshot_download", fake.snapshot_download)
    return fake


def http_error(cls, status: int, message: str = "refused"):
    request = httpx2.Request("GET", f"https://huggingface.co/api/models/{REPO}")
    return cls(message, response=httpx2.Response(status, request=request))


# ---- which files ----------------------------------------------------------------------------------
def test_select_files_takes_safetensors_and_skips_bin_and_original():
    assert fetch.select_files(list(FILES)) == WANTED


def test_select_files_takes_bin_when_no_safetensors():
    files = [f for f in FILES if "safetensors" not in f]
    chosen = fetch.select_files(files)
    assert "pytorch_model-00001-of-00002.bin" in chosen and "pytorch_model.bin.index.json" in chosen
    assert not any(f.startswith("original/") for f in chosen)


def test_select_files_allow_patterns_replace_the_choice():
    assert fetch.select_files(list(FILES), ["original/"]) == [
        "original/consolidated.00.pth",
        "original/params.json",
    ]
    assert fetch.select_files(list(FILES), ["*.bin", "config.json"]) == [
        "config.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
    ]


# ---- fetching -------------------------------------------------------------------------------------
def test_fetch_writes_the_folder_and_its_marker(hub, tmp_path):
    out = tmp_path / "models" / "llama"
    marker, downloaded = fetch.fetch(REPO, "main", out)
    assert downloaded and hub.downloads[0]["revision"] == "a" * 40  # pinned to the resolved commit
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        [*WANTED, fetch.MARKER]
    )
    on_disk = json.loads((out / fetch.MARKER).read_text())
    assert on_disk == marker
    assert on_disk["repo_id"] == REPO and on_disk["revision"] == "main" and on_disk["commit"] == "a" * 40
    assert on_disk["allow_patterns"] is None and on_disk["fetched_at"]
    assert {e["path"]: e["size"] for e in on_disk["files"]} == {f: len(FILES[f]) for f in WANTED}
    assert on_disk["total_bytes"] == sum(len(FILES[f]) for f in WANTED)
    assert not fetch.staging_folder(out).exists() and not (out / ".cache").exists()


def test_rerun_of_a_complete_folder_fetches_nothing(hub, tmp_path, monkeypatch):
    out = tmp_path / "llama"
    first, _ = fetch.fetch(REPO, "main", out)

    def boom(*args, **kwargs):
        raise AssertionError("the hub was called")

    monkeypatch.setattr(fetch, "repo_listing", boom)
    monkeypatch.setattr(fetch, "snapshot_download", boom)
    marker, downloaded = fetch.fetch(REPO, "main", out)
    assert not downloaded and marker == first


def test_another_revision_is_fetched_again(hub, tmp_path):
    out = tmp_path / "llama"
    fetch.fetch(REPO, "main", out)
    marker, downloaded = fetch.fetch(REPO, "v2", out)
    assert downloaded and [d["revision"] for d in hub.downloads] == ["a" * 40, "b" * 40]
    assert json.loads((out / fetch.MARKER).read_text())["commit"] == "b" * 40 == marker["commit"]
    assert not list(tmp_path.glob(".llama.*"))  # the old folder was swapped out and deleted


def test_a_damaged_folder_is_fetched_again(hub, tmp_path):
    out = tmp_path / "llama"
    fetch.fetch(REPO, "main", out)
    (out / "model-00002-of-00002.safetensors").write_bytes(b"short")
    _, downloaded = fetch.fetch(REPO, "main", out)
    assert (
        downloaded
        and (out / "model-00002-of-00002.safetensors").read_bytes()
        == FILES["model-00002-of-00002.safetensors"]
    )


def test_a_folder_not_made_by_fetch_is_refused(hub, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(DataError, match=r"mine exists but was not made by llara.fetch .*--overwrite"):
        fetch.fetch(REPO, "main", out)
    assert not hub.downloads
    _, downloaded = fetch.fetch(REPO, "main", out, overwrite=True)
    assert downloaded and (out / fetch.MARKER).is_file()


def test_interrupted_download_leaves_no_final_folder_and_resumes(hub, tmp_path):
    out = tmp_path / "llama"
    hub.fail_after = 3
    with pytest.raises(DataError, match="cannot reach the Hugging Face hub.*login node"):
        fetch.fetch(REPO, "main", out)
    assert not out.exists()
    staging = fetch.staging_folder(out)
    first = hub.downloads[0]["written"]
    assert len(first) == 3 and all((staging / f).is_file() for f in first)  # kept for the next run
    hub.fail_after = None
    _, downloaded = fetch.fetch(REPO, "main", out)
    assert downloaded and (out / fetch.MARKER).is_file() and not staging.exists()
    assert sorted(first + hub.downloads[1]["written"]) == WANTED  # resumed: nothing fetched twice


def test_a_staging_folder_of_another_request_is_started_over(hub, tmp_path):
    out = tmp_path / "llama"
    hub.fail_after = 2
    with pytest.raises(DataError):
        fetch.fetch(REPO, "main", out)
    stray = fetch.staging_folder(out) / "stray.bin"
    stray.write_bytes(b"x")
    hub.fail_after = None
    fetch.fetch(REPO, "v2", out)
    assert not (out / "stray.bin").exists()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            http_error(errors.GatedRepoError, 403, "Access to model is restricted"),
            r"is a gated model .*HTTP 403.*accept its licence on https://huggingface.co/meta-llama/"
            r"Llama-2-7b-hf.*hf auth login.*HF_TOKEN on the login node",
        ),
        (http_error(errors.HfHubHTTPError, 401, "Unauthorized"), r"gated model .*HTTP 401.*HF_TOKEN"),
        (
            http_error(errors.RevisionNotFoundError, 404),
            r"revision 'main' not found on the hub; pass a branch",
        ),
        (http_error(errors.RepositoryNotFoundError, 404), r"no such model on the hub .*check the id"),
        (httpx2.ConnectError("Name or service not known"), r"cannot reach .*login node.*base_model.source"),
        (http_error(errors.HfHubHTTPError, 503), r"the hub answered HTTP 503"),
    ],
    ids=["gated", "unauthorised", "revision", "repo", "no-network", "server"],
)
def test_hub_errors_are_one_line_with_the_fix(hub, tmp_path, error, expected):
    hub.error = error
    with pytest.raises(DataError, match=expected) as info:
        fetch.fetch(REPO, "main", tmp_path / "llama")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "llama").exists()


def test_gated_error_from_the_download_itself(hub, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise http_error(errors.GatedRepoError, 403)

    monkeypatch.setattr(fetch, "snapshot_download", refuse)
    with pytest.raises(DataError, match="gated model"):
        fetch.fetch(REPO, "main", tmp_path / "llama")
    assert not (tmp_path / "llama").exists()


def test_offline_is_refused_before_any_hub_call(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.error = AssertionError("the hub was called")
    with pytest.raises(DataError, match=r"HF_HUB_OFFLINE is set.*runs on the login node.*base_model.source"):
        fetch.fetch(REPO, "main", tmp_path / "llama")


def test_a_repo_without_weights_is_an_error(hub, tmp_path):
    hub.files = {"config.json": b"{}", "model.gguf": b"g"}
    with pytest.raises(DataError, match=r"no weights .*--allow-patterns"):
        fetch.fetch(REPO, "main", tmp_path / "llama")


def test_cli_in_process(hub, tmp_path, capsys):
    out = tmp_path / "llama"
    assert fetch.main(["--repo-id", REPO, "--revision", "main", "--output", str(out)]) == 0
    assert "fetched" in capsys.readouterr().out
    assert fetch.main(["--repo-id", REPO, "--revision", "main", "--output", str(out)]) == 0
    assert "already complete" in capsys.readouterr().out


def test_cli_offline_is_one_error_line(tmp_path):
    done = run_cli("fetch", "--repo-id", REPO, "--revision", "main", "--output", tmp_path / "llama")
    assert_bad_input(done, "HF_HUB_OFFLINE", "login node", REPO)
    assert not (tmp_path / "llama").exists()
