"""Conformance of the Hub test server (tests/hub_server.py) with the installed `huggingface_hub` client.

The client runs in subprocesses with the environment of `hub_env` (huggingface_hub reads HF_ENDPOINT,
HF_HUB_OFFLINE, HF_HOME and HF_HUB_DISABLE_XET when imported), so that a `huggingface_hub` upgrade that drifts
from the protocol the server speaks fails here rather than in the tests that push and pull checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
from urllib.parse import quote

from hub_server import hub_env

REPO = "tester/conformance"
BRANCH = "diffusers/base/post-trained"  # a branch name with slashes, URL-encoded by the client
WEIGHTS = hashlib.shake_256(b"weights").digest(64 * 1024)  # binary, LFS-size

# Pushes and pulls with the real client; prints the commit ids it made as its last line (JSON).
ONLINE = r"""
import hashlib, json, os, re, sys
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.hf_api import RepoFolder

work, repo, branch = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
assert constants.ENDPOINT == os.environ["HF_ENDPOINT"], constants.ENDPOINT
assert constants.HF_HUB_DISABLE_XET and not constants.HF_HUB_OFFLINE
api = HfApi()
assert api.whoami()["name"] == "tester"


def read(path):
    return Path(path).read_bytes()


weights = hashlib.shake_256(b"weights").digest(64 * 1024)
config_v1, config_v2 = b'{"step": 1}\n', b'{"step": 2}\n'
card = b"---\nlicense: mit\n---\n# A test model\n"
folder = work / "upload"
folder.mkdir()
(folder / "config.json").write_bytes(config_v1)
(folder / "model.safetensors").write_bytes(weights)
(folder / "README.md").write_bytes(card)  # goes through /api/validate-yaml

# create_repo twice: the second answer is a 409 that exist_ok=True accepts
assert api.create_repo(repo, exist_ok=True).repo_id == repo
assert api.create_repo(repo, exist_ok=True).repo_id == repo
first = api.upload_folder(repo_id=repo, folder_path=folder, commit_message="first")
assert re.fullmatch("[0-9a-f]{40}", first.oid) and first.repo_url.repo_id == repo

files = {f.path: f for f in api.list_repo_tree(repo)}
assert sorted(files) == [".gitattributes", "README.md", "config.json", "model.safetensors"], files
assert files["config.json"].lfs is None and files["config.json"].size == len(config_v1)
assert files["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
assert files["model.safetensors"].size == len(weights)
assert read(hf_hub_download(repo, "config.json")) == config_v1
assert read(hf_hub_download(repo, "model.safetensors")) == weights
snap = Path(snapshot_download(repo, cache_dir=work / "fresh_cache"))
assert snap.name == first.oid
assert read(snap / "model.safetensors") == weights and read(snap / "README.md") == card

# a branch with slashes in its name, and an upload to it
api.create_branch(repo, branch=branch)
api.create_branch(repo, branch=branch, exist_ok=True)
on_branch = api.upload_file(
    path_or_fileobj=b"only on the branch\n", path_in_repo="sub/dir/note.txt", repo_id=repo,
    revision=branch, commit_message="on branch",
)
assert api.file_exists(repo, "sub/dir/note.txt", revision=branch)
assert not api.file_exists(repo, "sub/dir/note.txt")
api.create_tag(repo, tag="v1.0", revision=first.oid)
refs = api.list_repo_refs(repo)
assert {b.name: b.target_commit for b in refs.branches} == {"main": first.oid, branch: on_branch.oid}
assert {t.name: t.target_commit for t in refs.tags} == {"v1.0": first.oid}

# model_info at a branch, a tag and a commit sha
assert api.model_info(repo, revision=branch).sha == on_branch.oid
assert api.model_info(repo, revision="v1.0").sha == first.oid
assert api.model_info(repo, revision=first.oid).sha == first.oid
info = api.model_info(repo, revision=branch, files_metadata=True)
siblings = {s.rfilename: s for s in info.siblings}
assert sorted(api.list_repo_files(repo, revision=branch)) == sorted(siblings)
assert "sub/dir/note.txt" in siblings and siblings["config.json"].lfs is None
assert siblings["model.safetensors"].lfs.size == len(weights)
assert read(hf_hub_download(repo, "sub/dir/note.txt", revision=branch)) == b"only on the branch\n"
assert read(hf_hub_download(repo, "config.json", revision=first.oid, cache_dir=work / "sha")) == config_v1
branch_snap = Path(snapshot_download(repo, revision=branch, cache_dir=work / "branch_cache"))
assert branch_snap.name == on_branch.oid and (branch_snap / "sub/dir/note.txt").is_file()

# a second commit on main: the branch moves, the first commit (and its tag) still serve the old bytes
second = api.upload_file(
    path_or_fileobj=config_v2, path_in_repo="config.json", repo_id=repo, commit_message="second"
)
assert second.oid != first.oid and api.model_info(repo).sha == second.oid
assert read(hf_hub_download(repo, "config.json")) == config_v2
assert read(hf_hub_download(repo, "config.json", revision=first.oid, cache_dir=work / "old")) == config_v1
assert read(hf_hub_download(repo, "config.json", revision="v1.0", cache_dir=work / "tag")) == config_v1
assert [c.title for c in api.list_repo_commits(repo)] == ["second", "first", "initial commit"]
pr = api.upload_file(path_or_fileobj=b"x\n", path_in_repo="pr.txt", repo_id=repo, create_pr=True)
assert pr.pr_revision == "refs/pr/1" and api.file_exists(repo, "pr.txt", revision=pr.pr_revision)
assert not api.file_exists(repo, "pr.txt")

# 60 files in one commit: list_repo_tree(expand=True) pages 50 at a time; paths-info; deletions
ops = [CommitOperationAdd(f"many/{i:02d}.txt", f"{i}\n".encode()) for i in range(60)]
many = api.create_commit(repo, ops, commit_message="many", revision=branch)
entries = list(api.list_repo_tree(repo, "many", revision=branch, expand=True))
assert len(entries) == 60 and {e.last_commit.oid for e in entries} == {many.oid}
top = {e.path: e for e in api.list_repo_tree(repo, revision=branch, expand=True)}
assert isinstance(top["sub"], RepoFolder) and top["sub"].last_commit.title == "on branch"
assert top["model.safetensors"].last_commit.oid == first.oid
paths = api.get_paths_info(repo, ["config.json", "many", "missing.txt"], revision=branch)
assert [(type(p).__name__, p.path) for p in paths] == [("RepoFile", "config.json"), ("RepoFolder", "many")]
api.delete_file("many/00.txt", repo, revision=branch)
api.delete_folder("sub", repo, revision=branch)
assert len(api.list_repo_files(repo, revision=branch)) == 4 + 59

# online downloads into this HF_HOME's cache, which the offline run reads back
hf_hub_download(repo, "model.safetensors", revision=branch)
snapshot_download(repo, revision="v1.0")
head = api.model_info(repo, revision=branch).sha
print(json.dumps({"first": first.oid, "second": second.oid, "branch": head}))
"""

# With HF_HUB_OFFLINE=1, reads back from the cache what ONLINE downloaded.
OFFLINE = r"""
import hashlib, json, sys
from pathlib import Path

from huggingface_hub import constants, hf_hub_download, snapshot_download

repo, branch, commits = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
assert constants.HF_HUB_OFFLINE
path = Path(hf_hub_download(repo, "model.safetensors", revision=branch))
assert path.read_bytes() == hashlib.shake_256(b"weights").digest(64 * 1024)
assert path.parent.name == commits["branch"]
snap = Path(snapshot_download(repo, revision="v1.0"))
assert snap.name == commits["first"] and (snap / "config.json").read_bytes() == b'{"step": 1}\n'
"""


def _run(script: str, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def test_huggingface_hub_round_trip(hub_server, tmp_path):
    home = tmp_path / "hf_home"  # a fresh HF_HOME: its cache is filled online, then read offline
    out = _run(ONLINE, hub_env(hub_server.url, home), str(tmp_path), REPO, BRANCH)
    commits = json.loads(out.strip().splitlines()[-1])
    served = len(hub_server.requests)
    _run(OFFLINE, hub_env(hub_server.url, home, offline=True), REPO, BRANCH, json.dumps(commits))
    assert len(hub_server.requests) == served, "the offline client reached the server"
    assert not hub_server.errors, hub_server.errors[0]
    assert not any("xet" in path.lower() for _, path, _ in hub_server.requests)

    # what the client needs of a download answer, and no Xet, seen from plain HTTP
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"{hub_server.url}/{REPO}/resolve/{quote(BRANCH, safe='')}/model.safetensors"
    with opener.open(urllib.request.Request(url, method="HEAD"), timeout=10) as answer:
        headers = {k.lower(): v for k, v in answer.headers.items()}
    assert headers["x-repo-commit"] == commits["branch"]
    assert headers["x-linked-etag"] == headers["etag"] == f'"{hashlib.sha256(WEIGHTS).hexdigest()}"'
    assert headers["x-linked-size"] == headers["content-length"] == str(len(WEIGHTS))
    assert not [k for k in headers if k.startswith("x-xet")]
    with opener.open(urllib.request.Request(url, headers={"Range": "bytes=10-19"}), timeout=10) as answer:
        assert answer.status == 206 and answer.read() == WEIGHTS[10:20]
