"""A small Hugging Face Hub HTTP server for the tests (standard library only, loopback only).

It speaks the part of the Hub HTTP API that the real `huggingface_hub` client uses to create repos, push
commits (regular files inline, large or binary files through the Git LFS "basic" transfer) and pull them back
(`hf_hub_download`, `snapshot_download`, `model_info`, `list_repo_tree`, refs, branches, tags, commits), so
that tests can run the real client against `http://127.0.0.1:PORT`:

    with HubServer(tmp_path / "hub") as hub:
        env = hub_env(hub.url, tmp_path / "hf_home")
        subprocess.run([sys.executable, "-c", "..."], env=env, check=True, timeout=120)

`huggingface_hub` reads HF_ENDPOINT, HF_HUB_OFFLINE, HF_HOME and HF_HUB_DISABLE_XET when it is imported, so
the client side runs in a subprocess with the environment from `hub_env`. The server never advertises Xet (no
`X-Xet-*` headers, no `xetHash`, `transfer: basic` in LFS batch answers): the client must run with
HF_HUB_DISABLE_XET=1, which `hub_env` sets.

Everything is stored under `root`: file contents in `objects/<sha256>`, each repo's commits, branches and tags
in `repos/<type>/<namespace>/<name>.json`. A server started again on the same root serves the same repos.
Commits are not git commits: each one holds its whole file tree, and its id is a random-salted 40-hex sha1.

Not supported: Xet, the LFS multipart transfer, `.gitignore`-based `shouldIgnore`, card metadata parsing
(`cardData`), gated/private access control (any bearer token is user `tester` and may write anywhere), Spaces.
Unexpected server errors answer 501 rather than 500, so that the client fails at once instead of retrying.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, override
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

USER = "tester"
ORG = "tester-org"
# repo type -> prefix of its web URLs (`/datasets/<ns>/<name>/resolve/...`); API route word -> repo type
URL_PREFIXES = {"model": "", "dataset": "datasets/"}
API_TYPES = {"models": "model", "datasets": "dataset"}
# Files whose name ends so are always LFS (also the patterns of the `.gitattributes` of a new repo).
LFS_SUFFIXES = (
    *(".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".npy", ".npz"),
    *(".pkl", ".pickle", ".parquet", ".arrow", ".mp4", ".tar", ".gz", ".zip", ".zst"),
)
TREE_PAGE_SIZE = 1000  # the Hub's page sizes for /tree (50 with expand=true) and /commits
TREE_EXPAND_PAGE_SIZE = 50
COMMITS_PAGE_SIZE = 50
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
HEX40 = re.compile(r"[0-9a-f]{40}")
HEX64 = re.compile(r"[0-9a-f]{64}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
# Variables that would point the client's cache, token or transfer elsewhere than `hub_env` says.
HF_OVERRIDES = (
    *("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_XET_CACHE", "HF_ASSETS_CACHE", "HF_TOKEN_PATH"),
    *(
        "HF_STORED_TOKENS_PATH",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_ENABLE_HF_TRANSFER",
        "HF_XET_HIGH_PERFORMANCE",
    ),
)


def hub_env(server_url: str, hf_home: str | os.PathLike, offline: bool = False) -> dict[str, str]:
    """`os.environ` plus what a `huggingface_hub` subprocess needs to talk to the server at `server_url`.

    The cache lives in `hf_home`; the token is a dummy one; Xet, telemetry, progress bars and proxies are off;
    with `offline=True` the client may only read its cache (HF_HUB_OFFLINE=1).
    """
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES + HF_OVERRIDES}
    flag = "1" if offline else "0"
    env.update(
        HF_ENDPOINT=server_url.rstrip("/"),
        HF_HOME=str(hf_home),
        HF_TOKEN="hf_dummy",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_OFFLINE=flag,
        TRANSFORMERS_OFFLINE=flag,
        HF_DATASETS_OFFLINE=flag,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


class HubError(Exception):
    """An HTTP error answer: status, message (JSON `error`) and the Hub's `X-Error-Code`, if any."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_true(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


def _check_path(path: str) -> str:
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


def _regular_entry(data: bytes, sha256: str) -> dict:
    return {"sha256": sha256, "size": len(data), "lfs": False, "oid": _git_blob_oid(data)}


def _lfs_entry(sha256: str, size: int) -> dict:
    pointer = LFS_POINTER.format(oid=sha256, size=size).encode()
    return {
        "sha256": sha256,
        "size": size,
        "lfs": True,
        "oid": _git_blob_oid(pointer),
        "pointerSize": len(pointer),
    }


class _Store:
    """Repos, commits, refs and file contents, persisted under `root`; callers hold `lock`."""

    def __init__(self, root: Path, lfs_threshold: int):
        self.root = root
        self.lfs_threshold = lfs_threshold
        self.lock = threading.RLock()
        self.objects = root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], dict] = {}
        for path in sorted((root / "repos").glob("*/*/*.json")):
            repo = json.loads(path.read_text())
            self.repos[(repo["type"], repo["id"])] = repo

    def save(self, repo: dict) -> None:
        path = self.root / "repos" / repo["type"] / f"{repo['id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps(repo))
        os.replace(tmp, path)

    def put_object(self, data: bytes) -> str:
        """Stores `data` under its sha256, which it returns."""
        oid = hashlib.sha256(data).hexdigest()
        path = self.objects / oid
        if not path.exists():
            tmp = self.objects / f".{oid}.{secrets.token_hex(4)}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return oid

    def object_size(self, oid: str) -> int | None:
        path = self.objects / oid
        return path.stat().st_size if HEX64.fullmatch(oid) and path.is_file() else None

    # -- repos and revisions -----------------------------------------------------------------------------
    def get(self, repo_type: str, repo_id: str) -> dict:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def create(self, repo_type: str, repo_id: str, private: bool) -> dict:
        repo = {
            "type": repo_type,
            "id": repo_id,
            "uid": secrets.token_hex(12),
            "private": private,
            "createdAt": _now(),
            "commits": {},
            "branches": {},
            "tags": {},
            "prs": {},
        }
        attributes = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
        data = attributes.encode()
        tree = {".gitattributes": _regular_entry(data, self.put_object(data))}
        repo["branches"]["main"] = self._new_commit(repo, None, tree, "initial commit", "")
        self.repos[(repo_type, repo_id)] = repo
        self.save(repo)
        return repo

    def delete(self, repo_type: str, repo_id: str) -> None:
        self.get(repo_type, repo_id)
        del self.repos[(repo_type, repo_id)]
        (self.root / "repos" / repo_type / f"{repo_id}.json").unlink(missing_ok=True)

    @staticmethod
    def resolve(repo: dict, revision: str) -> str | None:
        """The commit that `revision` (branch, tag, refs/..., full or >= 7-hex short sha) names, or None."""
        for prefix, refs in (("refs/heads/", repo["branches"]), ("refs/tags/", repo["tags"])):
            name = revision.removeprefix(prefix)
            if name in refs:
                return refs[name]
        if revision.startswith("refs/pr/") and revision[8:] in repo["prs"]:
            return repo["prs"][revision[8:]]
        if revision in repo["commits"]:
            return revision
        if re.fullmatch(r"[0-9a-f]{7,39}", revision):
            matches = [sha for sha in repo["commits"] if sha.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None

    def must_resolve(self, repo: dict, revision: str) -> str:
        sha = self.resolve(repo, revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def split_revision(self, repo: dict, segments: list[str], keep: int) -> tuple[str, list[str]]:
        """(commit sha, remaining raw segments) for URL path segments that start with a revision.

        The client URL-encodes revisions (`diffusers%2Fbase%2Fpost-trained`); a revision whose slashes came
        unencoded is found by trying ever longer prefixes, leaving at least `keep` segments.
        """
        for i in range(1, len(segments) - keep + 1):
            sha = self.resolve(repo, unquote("/".join(segments[:i])))
            if sha is not None:
                return sha, segments[i:]
        raise HubError(404, f"Invalid rev id: {unquote(segments[0]) if segments else ''}", "RevisionNotFound")

    # -- commits -----------------------------------------------------------------------------------------
    @staticmethod
    def _new_commit(repo: dict, parent: str | None, tree: dict, title: str, message: str) -> str:
        salt = secrets.token_hex(8)
        payload = json.dumps([parent, sorted((p, e["oid"]) for p, e in tree.items()), title, message, salt])
        sha = hashlib.sha1(payload.encode()).hexdigest()
        repo["commits"][sha] = {
            "parents": [parent] if parent else [],
            "title": title,
            "message": message,
            "date": _now(),
            "authors": [USER],
            "tree": tree,
        }
        return sha

    def commit(self, repo: dict, revision: str, lines: list[dict], create_pr: bool) -> tuple[str, str | None]:
        """Applies ndjson commit `lines` on branch `revision` (or a new PR from it): (new sha, PR number)."""
        if revision.startswith("refs/pr/") and revision[8:] in repo["prs"]:
            refs, name = repo["prs"], revision[8:]
        else:
            refs, name = repo["branches"], revision.removeprefix("refs/heads/")
            if name not in refs:
                raise HubError(
                    404, f"Invalid rev id: {revision} (commits go to a branch)", "RevisionNotFound"
                )
        head = refs[name]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line of a commit must be its header")
        header = lines[0].get("value") or {}
        parent = header.get("parentCommit")
        if parent and self.resolve(repo, parent) != head:
            raise HubError(412, f"A commit has happened since {parent}: the head of {revision} is {head}")
        tree = dict(repo["commits"][head]["tree"])
        for line in lines[1:]:
            self._apply(tree, line.get("key"), line.get("value") or {})
        if create_pr:
            refs, name = repo["prs"], str(len(repo["prs"]) + 1)
        title, message = header.get("summary") or "", header.get("description") or ""
        refs[name] = self._new_commit(repo, head, tree, title, message)
        self.save(repo)
        return refs[name], name if create_pr else None

    def _apply(self, tree: dict, key: str | None, value: dict) -> None:
        path = value.get("path", "")
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise HubError(400, f"Unsupported encoding {value.get('encoding')!r} for {path}")
            data = base64.b64decode(value.get("content", ""))
            tree[_check_path(path)] = _regular_entry(data, self.put_object(data))
        elif key == "lfsFile":
            oid = value.get("oid", "")
            size = self.object_size(oid)
            if size is None:
                raise HubError(400, f"LFS object {oid} of {path} was not uploaded")
            if value.get("size") is not None and int(value["size"]) != size:
                raise HubError(400, f"LFS object {oid} of {path} has size {size}, not {value['size']}")
            tree[_check_path(path)] = _lfs_entry(oid, size)
        elif key == "deletedFile":
            if tree.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            prefix = path.rstrip("/") + "/"
            doomed = [p for p in tree if p.startswith(prefix)]
            if not doomed:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in doomed:
                del tree[p]
        else:
            raise HubError(400, f"Unsupported commit operation {key!r}")


def _dir_oid(tree: dict, path: str) -> str | None:
    """A stand-in git tree id for folder `path`: a hash of the files below it (None when it has none)."""
    prefix = path + "/" if path else ""
    items = sorted((p, e["oid"]) for p, e in tree.items() if p.startswith(prefix))
    return hashlib.sha1(json.dumps(items).encode()).hexdigest() if items else None


def _listing(tree: dict, path: str, recursive: bool) -> list[tuple[str, str]]:
    """(kind, path) of the entries of folder `path` ("" is the root): children, or all with `recursive`."""
    prefix = path + "/" if path else ""
    found: dict[str, str] = {}
    for file in tree:
        if not file.startswith(prefix):
            continue
        parts = file[len(prefix) :].split("/")
        for i in range(1, (len(parts) if recursive else 2)):
            if i < len(parts):
                found[prefix + "/".join(parts[:i])] = "directory"
        if recursive or len(parts) == 1:
            found[file] = "file"
    return sorted((kind, p) for p, kind in found.items())


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, store: _Store):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.store = store
        self.requests: list[tuple[str, str, int]] = []
        self.errors: list[str] = []
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()

    @override
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is no error; anything else is kept in `errors` (not printed)."""
        if not isinstance(sys.exception(), OSError):
            self.errors.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    """Routes each request to the endpoint method below; each answers JSON unless said otherwise."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection is dropped after this many seconds
    server: _HTTPServer

    # -- plumbing ----------------------------------------------------------------------------------------
    @override
    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            self.server.connections.add(self.connection)

    @override
    def finish(self) -> None:
        with self.server.conn_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    @override
    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the requests are kept in `server.requests`."""

    @override
    def version_string(self) -> str:
        return "hub-test-server"

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err

    @property
    def base(self) -> str:
        """This server's URL as the client named it (its Host header)."""
        return f"http://{self.headers.get('Host') or f'127.0.0.1:{self.server.server_address[1]}'}"

    def _send(
        self, status: int, body: bytes = b"", content_type: str = "application/json", headers=None
    ) -> None:
        """Sets the answer; `_handle` writes it once the store lock is released."""
        self.answer = (status, body, {"Content-Type": content_type, **(headers or {})})

    def _json(
        self, data: Any, status: int = 200, headers=None, content_type: str = "application/json"
    ) -> None:
        self._send(status, json.dumps(data).encode(), content_type, headers)

    def _handle(self) -> None:
        self.answer = (501, b"", {})
        self.body = self._read_body() if self.command in ("POST", "PUT", "DELETE", "PATCH") else b""
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        try:
            with self.server.store.lock:
                self._route(url.path.strip("/").split("/"))
        except HubError as err:
            message = err.message.splitlines()[0].encode("ascii", "backslashreplace").decode()
            headers = {"X-Error-Message": message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._json({"error": err.message}, err.status, headers)
        except Exception:
            self.server.errors.append(traceback.format_exc())
            self._json({"error": traceback.format_exc()}, 501)  # not 500: the client would retry for ~30 s
        status, body, headers = self.answer
        self.server.requests.append((self.command, self.path, status))
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:  # the client went away
            self.close_connection = True

    def _need_auth(self) -> None:
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            raise HubError(401, "You must be authenticated (any bearer token will do) for this request")

    def _repo_url(self, repo: dict) -> str:
        return f"{self.base}/{URL_PREFIXES[repo['type']]}{repo['id']}"

    def _route(self, s: list[str]) -> None:
        store, method = self.server.store, self.command
        if s[0] == "api":
            if s[1:] == ["whoami-v2"] and method == "GET":
                return self.whoami()
            if s[1:] == ["validate-yaml"] and method == "POST":
                return self.validate_yaml()
            if s[1:] == ["repos", "create"] and method == "POST":
                return self.create_repo()
            if s[1:] == ["repos", "delete"] and method == "DELETE":
                return self.delete_repo()
            if len(s) >= 4 and s[1] in API_TYPES:
                repo = store.get(API_TYPES[s[1]], unquote(s[2]) + "/" + unquote(s[3]))
                action, rest = (s[4], s[5:]) if len(s) > 4 else ("", [])
                handler = {
                    ("GET", ""): self.repo_info,
                    ("GET", "revision"): self.repo_info,
                    ("GET", "tree"): self.tree,
                    ("GET", "refs"): self.refs,
                    ("GET", "commits"): self.commits,
                    ("POST", "paths-info"): self.paths_info,
                    ("POST", "preupload"): self.preupload,
                    ("POST", "commit"): self.commit,
                    ("POST", "branch"): self.create_branch,
                    ("DELETE", "branch"): self.delete_branch,
                    ("POST", "tag"): self.create_tag,
                    ("DELETE", "tag"): self.delete_tag,
                }.get((method, action))
                if handler is not None:
                    return handler(repo, rest)
        elif s[0] == "lfs-storage" and len(s) >= 2:
            if method == "PUT" and len(s) == 2:
                return self.lfs_put(s[1])
            if method == "POST" and s[2:] == ["verify"]:
                return self.lfs_verify(s[1])
            if method in ("GET", "HEAD") and len(s) == 2:
                return self.lfs_get(s[1])
        else:
            repo_type = "dataset" if s[0] == "datasets" else "model"
            s = s[1:] if s[0] == "datasets" else s
            if len(s) >= 5 and s[2] == "resolve" and method in ("GET", "HEAD"):
                return self.resolve(store.get(repo_type, unquote(s[0]) + "/" + unquote(s[1])), s[3:])
            if len(s) == 6 and s[2:] == ["info", "lfs", "objects", "batch"] and s[1].endswith(".git"):
                return self.lfs_batch(store.get(repo_type, unquote(s[0]) + "/" + unquote(s[1])[:-4]))
        raise HubError(501, f"{method} {self.path} is not implemented by the test hub server")

    # -- account -----------------------------------------------------------------------------------------
    def whoami(self) -> None:
        """GET /api/whoami-v2: the dummy user `tester`, member of org `tester-org`, with a write token."""
        self._need_auth()
        org = {"type": "org", "id": "1" * 24, "name": ORG, "fullname": "Test Org", "roleInOrg": "admin"}
        self._json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": USER,
                "fullname": "Test User",
                "email": f"{USER}@example.com",
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "avatarUrl": "",
                "orgs": [org],
                "auth": {"type": "access_token", "accessToken": {"displayName": "dummy", "role": "write"}},
            }
        )

    def validate_yaml(self) -> None:
        """POST /api/validate-yaml: a card is valid unless its `---` metadata block is left open."""
        lines = str(self._json_body().get("content", "")).splitlines()
        if lines and lines[0].strip() == "---" and "---" not in (line.strip() for line in lines[1:]):
            message = "The metadata block of README.md is not closed by a '---' line"
            return self._json({"error": message, "errors": [{"message": message}], "warnings": []}, 400)
        self._json({"errors": [], "warnings": []})

    # -- repos -------------------------------------------------------------------------------------------
    def _repo_from_payload(self) -> tuple[str, str, dict]:
        payload = self._json_body()
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Repo type {repo_type!r} is not supported by the test hub server")
        name, namespace = payload.get("name") or "", payload.get("organization") or USER
        if not NAME.fullmatch(name) or not NAME.fullmatch(namespace):
            raise HubError(400, f"Invalid repo name: {namespace}/{name}")
        return repo_type, f"{namespace}/{name}", payload

    def create_repo(self) -> None:
        """POST /api/repos/create: a repo with an initial commit (`.gitattributes`) on `main`; 409 (with the
        repo's `url`, which `exist_ok=True` reads) when it exists."""
        self._need_auth()
        repo_type, repo_id, payload = self._repo_from_payload()
        store = self.server.store
        if (repo_type, repo_id) in store.repos:
            url = self._repo_url(store.repos[(repo_type, repo_id)])
            return self._json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
        private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        repo = store.create(repo_type, repo_id, private)
        self._json({"url": self._repo_url(repo), "name": repo_id, "id": repo["uid"]})

    def delete_repo(self) -> None:
        """DELETE /api/repos/delete: forgets a repo (its file contents stay in the object store)."""
        self._need_auth()
        repo_type, repo_id, _ = self._repo_from_payload()
        self.server.store.delete(repo_type, repo_id)
        self._json({})

    def repo_info(self, repo: dict, rest: list[str]) -> None:
        """GET /api/{models,datasets}/{repo}[/revision/{rev}]: id, sha, siblings (with `blobs=true` also size,
        blobId and lfs), dates, private; `expand` and `securityStatus` are ignored."""
        sha = self.server.store.must_resolve(repo, unquote("/".join(rest)) if rest else "main")
        commit, blobs = repo["commits"][sha], _is_true(self.query.get("blobs"))
        siblings = []
        for path, entry in sorted(commit["tree"].items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    lfs = {
                        "sha256": entry["sha256"],
                        "size": entry["size"],
                        "pointerSize": entry["pointerSize"],
                    }
                    sibling["lfs"] = lfs
            siblings.append(sibling)
        info = {
            "_id": repo["uid"],
            "id": repo["id"],
            "author": repo["id"].split("/")[0],
            "sha": sha,
            "createdAt": repo["createdAt"],
            "lastModified": commit["date"],
            "private": repo["private"],
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(e["size"] for e in commit["tree"].values()),
        }
        if repo["type"] == "model":
            info.update(modelId=repo["id"], spaces=[])
        self._json(info)

    # -- trees -------------------------------------------------------------------------------------------
    def _entries(self, repo: dict, sha: str, items: list[tuple[str, str]], expand: bool) -> list[dict]:
        """The /tree entries of (kind, path) `items` at commit `sha`, with `lastCommit` when `expand`."""
        tree = repo["commits"][sha]["tree"]
        out = []
        for kind, path in items:
            if kind == "file":
                entry = tree[path]
                item = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
                if entry["lfs"]:
                    item["lfs"] = {
                        "oid": entry["sha256"],
                        "size": entry["size"],
                        "pointerSize": entry["pointerSize"],
                    }
            else:
                item = {"type": "directory", "oid": _dir_oid(tree, path), "size": 0, "path": path}
            out.append(item)
        if expand:
            for item, last in zip(out, self._last_commits(repo, sha, items), strict=True):
                commit = repo["commits"][last]
                item["lastCommit"] = {"id": last, "title": commit["title"], "date": commit["date"]}
        return out

    @staticmethod
    def _last_commits(repo: dict, sha: str, items: list[tuple[str, str]]) -> list[str]:
        """For each (kind, path), the newest commit (following first parents from `sha`) that changed it."""

        def signature(tree: dict, kind: str, path: str) -> str | None:
            if kind == "file":
                return tree[path]["oid"] if path in tree else None
            return _dir_oid(tree, path)

        found: dict[int, str] = {}
        current: str | None = sha
        while current is not None and len(found) < len(items):
            commit = repo["commits"][current]
            parent = commit["parents"][0] if commit["parents"] else None
            parent_tree = repo["commits"][parent]["tree"] if parent else {}
            for i, (kind, path) in enumerate(items):
                if i not in found and signature(commit["tree"], kind, path) != signature(
                    parent_tree, kind, path
                ):
                    found[i] = current
            current = parent
        return [found.get(i, sha) for i in range(len(items))]

    def _page(self, items: list, size: int, render: Callable[[list], list] | None = None) -> None:
        """Answers one page of `items` (`cursor`: offset, `limit`: page size) and, when more follow, a
        `Link: <...>; rel="next"` header, as the Hub paginates."""
        if self.query.get("limit"):
            size = max(1, int(self.query["limit"][-1]))
        start = int(self.query.get("cursor", ["0"])[-1] or 0)
        headers = {}
        if start + size < len(items):
            query = {k: v[-1] for k, v in self.query.items()} | {"cursor": str(start + size)}
            headers["Link"] = f'<{self.base}{urlsplit(self.path).path}?{urlencode(query)}>; rel="next"'
        page = items[start : start + size]
        self._json(render(page) if render else page, headers=headers)

    def tree(self, repo: dict, rest: list[str]) -> None:
        """GET /api/{type}s/{repo}/tree/{rev}[/{path}]: the files (oid, size, lfs) and folders in a folder
        (all below it with `recursive=true`), with `lastCommit` when `expand=true`; paginated like the Hub."""
        sha, path_segments = self.server.store.split_revision(repo, rest, keep=0)
        path = unquote("/".join(path_segments)).strip("/")
        items = _listing(repo["commits"][sha]["tree"], path, _is_true(self.query.get("recursive")))
        if path and not items:
            raise HubError(404, f"{path} is not a folder at {sha}", "EntryNotFound", {"X-Repo-Commit": sha})
        expand = _is_true(self.query.get("expand"))
        size = TREE_EXPAND_PAGE_SIZE if expand else TREE_PAGE_SIZE
        # only the entries of the page asked for get their (costly) lastCommit
        self._page(items, size, lambda page: self._entries(repo, sha, page, expand))

    def paths_info(self, repo: dict, rest: list[str]) -> None:
        """POST /api/{type}s/{repo}/paths-info/{rev} (form: paths=..., expand=...): the /tree entries of the
        paths that exist."""
        sha = self.server.store.must_resolve(repo, unquote("/".join(rest)))
        form = parse_qs(self.body.decode())
        tree = repo["commits"][sha]["tree"]
        items = []
        for path in dict.fromkeys(p.strip("/") for p in form.get("paths", [])):
            if path in tree:
                items.append(("file", path))
            elif _dir_oid(tree, path) is not None:
                items.append(("directory", path))
        self._json(self._entries(repo, sha, items, _is_true(form.get("expand"))))

    # -- refs --------------------------------------------------------------------------------------------
    def refs(self, repo: dict, rest: list[str]) -> None:
        """GET /api/{type}s/{repo}/refs[?include_prs=1]: branches and tags (name, ref, targetCommit)."""

        def listed(kind: str, names: dict) -> list[dict]:
            return [{"name": n, "ref": f"{kind}{n}", "targetCommit": sha} for n, sha in sorted(names.items())]

        data = {
            "branches": listed("refs/heads/", repo["branches"]),
            "tags": listed("refs/tags/", repo["tags"]),
            "converts": [],
        }
        if _is_true(self.query.get("include_prs")):
            prs = listed("refs/pr/", repo["prs"])
            data["pullRequests"] = [{**pr, "name": pr["ref"]} for pr in prs]
        self._json(data)

    def create_branch(self, repo: dict, rest: list[str]) -> None:
        """POST /api/{type}s/{repo}/branch/{branch} (json startingPoint, default the head of main); 409 if it
        exists."""
        self._need_auth()
        store, branch = self.server.store, unquote("/".join(rest))
        if not branch or HEX40.fullmatch(branch) or branch.startswith("refs/") or ".." in branch:
            raise HubError(400, f"Invalid branch name: {branch!r}")
        if branch in repo["branches"]:
            raise HubError(409, f"Branch {branch} already exists")
        start = self._json_body().get("startingPoint")
        repo["branches"][branch] = store.must_resolve(repo, start or "main")
        store.save(repo)
        self._json({})

    def delete_branch(self, repo: dict, rest: list[str]) -> None:
        """DELETE /api/{type}s/{repo}/branch/{branch}; `main` cannot be deleted (403)."""
        self._need_auth()
        branch = unquote("/".join(rest))
        if branch == "main":
            raise HubError(403, "The main branch cannot be deleted")
        if repo["branches"].pop(branch, None) is None:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        self.server.store.save(repo)
        self._json({})

    def create_tag(self, repo: dict, rest: list[str]) -> None:
        """POST /api/{type}s/{repo}/tag/{revision} (json tag, message): tags that commit; 409 if it exists."""
        self._need_auth()
        store, tag = self.server.store, self._json_body().get("tag") or ""
        sha = store.must_resolve(repo, unquote("/".join(rest)))
        if not tag or HEX40.fullmatch(tag) or tag.startswith("refs/"):
            raise HubError(400, f"Invalid tag name: {tag!r}")
        if tag in repo["tags"]:
            raise HubError(409, f"Tag {tag} already exists")
        repo["tags"][tag] = sha
        store.save(repo)
        self._json({})

    def delete_tag(self, repo: dict, rest: list[str]) -> None:
        """DELETE /api/{type}s/{repo}/tag/{tag}."""
        self._need_auth()
        tag = unquote("/".join(rest))
        if repo["tags"].pop(tag, None) is None:
            raise HubError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
        self.server.store.save(repo)
        self._json({})

    def commits(self, repo: dict, rest: list[str]) -> None:
        """GET /api/{type}s/{repo}/commits/{rev}: the commits reachable by first parents, newest first."""
        current: str | None = self.server.store.must_resolve(repo, unquote("/".join(rest)) or "main")
        items = []
        while current is not None:
            commit = repo["commits"][current]
            authors = [{"user": author, "avatar": ""} for author in commit["authors"]]
            items.append(
                {
                    "id": current,
                    "title": commit["title"],
                    "message": commit["message"],
                    "authors": authors,
                    "date": commit["date"],
                }
            )
            current = commit["parents"][0] if commit["parents"] else None
        self._page(items, COMMITS_PAGE_SIZE)

    # -- uploads -----------------------------------------------------------------------------------------
    def preupload(self, repo: dict, rest: list[str]) -> None:
        """POST /api/{type}s/{repo}/preupload/{rev}: per file "lfs" (an LFS suffix, a NUL byte in the sample
        or size >= lfs_threshold) or "regular", and the oid of the file there (git sha1, LFS sha256)."""
        self._need_auth()
        store = self.server.store
        head = store.must_resolve(repo, unquote("/".join(rest)))
        tree = repo["commits"][head]["tree"]
        files = []
        for file in self._json_body().get("files", []):
            path, size = file["path"], int(file.get("size", 0))
            sample = base64.b64decode(file.get("sample", ""))
            lfs = path.lower().endswith(LFS_SUFFIXES) or b"\0" in sample or size >= store.lfs_threshold
            info = {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
            if path in tree:
                info["oid"] = tree[path]["sha256"] if tree[path]["lfs"] else tree[path]["oid"]
            files.append(info)
        self._json({"files": files, "commitOid": head})

    def lfs_batch(self, repo: dict) -> None:
        """POST /{repo}.git/info/lfs/objects/batch: "basic" transfer actions. Upload: PUT and verify hrefs on
        this server, or no actions when the object is already stored; download: a GET href."""
        self._need_auth()
        store, payload = self.server.store, self._json_body()
        objects = []
        for obj in payload.get("objects", []):
            oid, size = str(obj.get("oid", "")), int(obj.get("size", 0))
            item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            href = f"{self.base}/lfs-storage/{oid}"
            if not HEX64.fullmatch(oid):
                item["error"] = {"code": 422, "message": f"Invalid sha256 oid {oid!r}"}
            elif payload.get("operation") == "download":
                if store.object_size(oid) is None:
                    item["error"] = {"code": 404, "message": "Object does not exist"}
                else:
                    item["actions"] = {"download": {"href": href, "header": {}}}
            elif store.object_size(oid) != size:
                item["actions"] = {
                    "upload": {"href": href, "header": {}},
                    "verify": {"href": href + "/verify"},
                }
            objects.append(item)
        answer = {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}
        self._json(answer, content_type="application/vnd.git-lfs+json")

    def lfs_put(self, oid: str) -> None:
        """PUT /lfs-storage/{oid}: stores an LFS object whose sha256 must be `oid` (no auth: a signed URL)."""
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, f"The uploaded content does not hash to {oid}")
        self.server.store.put_object(self.body)
        self._send(200)

    def lfs_verify(self, oid: str) -> None:
        """POST /lfs-storage/{oid}/verify (json oid, size): 200 when that object is stored with that size."""
        if self.server.store.object_size(oid) != int(self._json_body().get("size", -1)):
            raise HubError(404, f"LFS object {oid} is missing or has another size")
        self._json({"success": True})

    def lfs_get(self, oid: str) -> None:
        """GET/HEAD /lfs-storage/{oid}: the raw LFS object."""
        if self.server.store.object_size(oid) is None:
            raise HubError(404, f"LFS object {oid} does not exist")
        self._send(200, (self.server.store.objects / oid).read_bytes(), "application/octet-stream")

    def commit(self, repo: dict, rest: list[str]) -> None:
        """POST /api/{type}s/{repo}/commit/{branch} (ndjson lines: header, file, lfsFile, deletedFile,
        deletedFolder): a new commit on the branch (with create_pr=1: on a new refs/pr/N); 412 when
        parentCommit is stale."""
        self._need_auth()
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        except ValueError as err:
            raise HubError(400, f"Invalid ndjson commit payload: {err}") from err
        create_pr = _is_true(self.query.get("create_pr"))
        sha, pr = self.server.store.commit(repo, unquote("/".join(rest)), lines, create_pr)
        url = self._repo_url(repo)
        self._json(
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{url}/commit/{sha}",
                "commitMessage": lines[0]["value"].get("summary"),
                "hookOutput": "",
                "pullRequestUrl": f"{url}/discussions/{pr}" if pr else None,
            }
        )

    # -- downloads ---------------------------------------------------------------------------------------
    def resolve(self, repo: dict, rest: list[str]) -> None:
        """GET/HEAD /[datasets/]{repo}/resolve/{rev}/{path}: the file, with X-Repo-Commit, ETag (git sha1;
        LFS: sha256) and, for LFS files, X-Linked-Etag and X-Linked-Size; honours `Range: bytes=a-b`."""
        store = self.server.store
        sha, path_segments = store.split_revision(repo, rest, keep=1)
        path = unquote("/".join(path_segments))
        entry = repo["commits"][sha]["tree"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path} at {sha}", "EntryNotFound", {"X-Repo-Commit": sha})
        etag = f'"{entry["sha256"] if entry["lfs"] else entry["oid"]}"'
        headers = {"X-Repo-Commit": sha, "ETag": etag, "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": etag, "X-Linked-Size": str(entry["size"])})
        data = (store.objects / entry["sha256"]).read_bytes()
        status, size = 200, len(data)
        ranged = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if ranged and (ranged[1] or ranged[2]):
            if ranged[1]:
                first, last = int(ranged[1]), min(int(ranged[2] or size - 1), size - 1)
            else:
                first, last = max(size - int(ranged[2]), 0), size - 1
            if first >= size or first > last:
                raise HubError(
                    416, f"Range not satisfiable: {size} bytes", None, {"Content-Range": f"bytes */{size}"}
                )
            status, data = 206, data[first : last + 1]
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        self._send(status, data, "application/octet-stream", headers)


for _method in ("GET", "HEAD", "POST", "PUT", "DELETE"):
    setattr(_Handler, f"do_{_method}", _Handler._handle)  # http.server calls do_<METHOD>


class HubServer:
    """The Hub test server on 127.0.0.1 (a free port), serving from a daemon thread until `close()`.

    `url` is its endpoint (HF_ENDPOINT). `requests` lists (method, path, status) of the requests served and
    `errors` the tracebacks of unexpected failures. Files of `lfs_threshold` bytes or more are pushed as LFS.
    """

    def __init__(self, root: str | os.PathLike, *, lfs_threshold: int = 1024):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._httpd = _HTTPServer(_Store(self.root, lfs_threshold))
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._closed = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="hub-server", daemon=True
        )
        self._thread.start()

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        return self._httpd.requests

    @property
    def errors(self) -> list[str]:
        return self._httpd.errors

    def repos(self) -> list[tuple[str, str]]:
        """(repo type, repo id) of the repos it holds."""
        with self._httpd.store.lock:
            return sorted(self._httpd.store.repos)

    def close(self) -> None:
        """Stops serving, closes the listening socket and drops the open keep-alive connections."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._httpd.conn_lock:
            for conn in list(self._httpd.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HubServer({self.url}, root={self.root})"
