"""A small stand-in for the Hugging Face Hub's HTTP API, enough for create_repo and upload_folder.

It answers what huggingface_hub 2.x sends with Xet off (HF_HUB_DISABLE_XET=1):
  GET  /api/whoami-v2                                 the token's user
  GET  /api/agent-harnesses                           huggingface_hub's user-agent registry (empty)
  POST /api/repos/create                              409 if the repo exists
  GET  /api/models/{repo}[/revision/{rev}]            repo_info
  POST /api/models/{repo}/branch/{branch}             create_branch (from main)
  POST /api/validate-yaml                             the README.md front matter must be a mapping
  POST /api/models/{repo}/preupload/{rev}             "lfs" for *.safetensors and > 10 MB, else "regular"
  POST /{repo}.git/info/lfs/objects/batch             LFS basic transfer: an upload href per new object
  PUT  /lfs-upload/{oid}                              the object's bytes (sha256 checked)
  POST /api/models/{repo}/commit/{rev}[?create_pr=1]  NDJSON: header, file (base64), lfsFile, deletedFile

Every API call needs `Authorization: Bearer <token>` (else 401). `fail(endpoint, 500, "reset", ...)`
queues answers for the next calls to an endpoint: a status code, or "reset" to drop the connection.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_REPO = r"(?P<repo>[^/]+/[^/]+?)"
ROUTES = [
    ("GET", "whoami", r"/api/whoami-v2"),
    ("GET", "agents", r"/api/agent-harnesses"),
    ("POST", "create", r"/api/repos/create"),
    ("POST", "validate", r"/api/validate-yaml"),
    ("POST", "branch", rf"/api/models/{_REPO}/branch/(?P<rev>.+)"),
    ("POST", "preupload", rf"/api/models/{_REPO}/preupload/(?P<rev>.+)"),
    ("POST", "commit", rf"/api/models/{_REPO}/commit/(?P<rev>.+)"),
    ("GET", "info", rf"/api/models/{_REPO}(/revision/(?P<rev>.+))?"),
    ("POST", "lfs-batch", rf"/{_REPO}\.git/info/lfs/objects/batch"),
    ("PUT", "lfs-upload", r"/lfs-upload/(?P<oid>[0-9a-f]{64})"),
]


@dataclass
class Repo:
    private: bool
    refs: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    commits: list[dict] = field(default_factory=list)  # {"ref", "summary", "paths", "modes"}


class FakeHub:
    def __init__(self, token: str, user: str = "tester", orgs: tuple[str, ...] = ("uptrain-org",)) -> None:
        self.token, self.user, self.orgs = token, user, orgs
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}  # path -> the upload mode preupload answered
        self.requests: list[tuple[str, str]] = []  # (endpoint, path) of every request
        self.authorization: list[str | None] = []
        self.faults: dict[str, list[int | str]] = {}
        self.read_only = False  # 403 on writes, as for a token without write access
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, endpoint: str, *answers: int | str) -> None:
        self.faults.setdefault(endpoint, []).extend(answers)

    def files(self, repo_id: str, ref: str = "main") -> dict[str, bytes]:
        return dict(self.repos[repo_id].refs[ref])

    def calls(self, endpoint: str) -> int:
        return sum(1 for e, _ in self.requests if e == endpoint)

    # -- endpoints: each returns (status, JSON body[, headers]) --------------------------------------

    def agents(self, m, body, query):  # huggingface_hub's user-agent registry, fetched once
        return 200, {"standardEnvVars": [], "harnesses": {}}

    def whoami(self, m, body, query):
        return 200, {
            "type": "user",
            "name": self.user,
            "orgs": [{"name": o} for o in self.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
        }

    def create(self, m, body, query):
        payload = json.loads(body)
        owner = payload.get("organization") or self.user
        repo_id = f"{owner}/{payload['name']}"
        if self.read_only or owner not in (self.user, *self.orgs):
            return 403, {"error": "You don't have the rights to create a model under this namespace"}
        if repo_id in self.repos:
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
        self.repos[repo_id] = Repo(
            private=payload.get("visibility") == "private" or bool(payload.get("private"))
        )
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id}

    def info(self, m, body, query):
        repo = self.repos.get(m["repo"])
        if repo is None:
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        siblings = [{"rfilename": p} for p in repo.refs["main"]]
        return 200, {"id": m["repo"], "private": repo.private, "sha": "0" * 40, "siblings": siblings}

    def branch(self, m, body, query):
        repo = self._writable(m)
        if isinstance(repo, tuple):
            return repo
        if m["rev"] in repo.refs:
            return 409, {"error": "Reference already exists"}
        repo.refs[m["rev"]] = dict(repo.refs["main"])
        return 200, {}

    def validate(self, m, body, query):
        content = json.loads(body)["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        meta = yaml.safe_load(match.group(1)) if match else None
        if not isinstance(meta, dict):
            return 400, {"errors": [{"message": "metadata must be a YAML mapping"}], "warnings": []}
        return 200, {"errors": [], "warnings": []}

    def preupload(self, m, body, query):
        repo = self._writable(m)
        if isinstance(repo, tuple):
            return repo
        files = []
        for f in json.loads(body)["files"]:
            mode = "lfs" if f["path"].endswith(".safetensors") or f["size"] > 10_000_000 else "regular"
            self.modes[f["path"]] = mode
            files.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": None})
        return 200, {"files": files, "commitOid": "0" * 40}

    def lfs_batch(self, m, body, query):
        repo = self._writable(m)
        if isinstance(repo, tuple):
            return repo
        objects = []
        for obj in json.loads(body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs:
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}

    def lfs_upload(self, m, body, query):
        if hashlib.sha256(body).hexdigest() != m["oid"]:
            return 400, {"error": "sha256 mismatch"}
        self.lfs[m["oid"]] = body
        return 200, {}

    def commit(self, m, body, query):
        repo = self._writable(m)
        if isinstance(repo, tuple):
            return repo
        ref = m["rev"]
        if ref not in repo.refs:
            return 404, {"error": f"Invalid rev id: {ref}"}, {"X-Error-Code": "RevisionNotFound"}
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            return 400, {"error": "the first line must be the header"}
        tree = dict(repo.refs[ref])
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                tree[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                blob = self.lfs.get(value["oid"])
                if blob is None or len(blob) != value.get("size", len(blob)):
                    return 400, {"error": f"LFS object {value['oid']} was not uploaded"}
                tree[value["path"]] = blob
            elif key == "deletedFile":
                tree.pop(value["path"], None)
            else:
                return 400, {"error": f"unsupported operation {key}"}
        pr_url = None
        if query.get("create_pr") == ["1"]:
            number = 1 + sum(1 for r in repo.refs if r.startswith("refs/pr/"))
            ref = f"refs/pr/{number}"
            pr_url = f"{self.url}/{m['repo']}/discussions/{number}"
        repo.refs[ref] = tree
        changed = sorted(line["value"]["path"] for line in lines[1:])
        repo.commits.append({"ref": ref, "summary": lines[0]["value"]["summary"], "paths": changed})
        oid = hashlib.sha1(json.dumps(changed).encode() + str(len(repo.commits)).encode()).hexdigest()
        return 200, {
            "commitUrl": f"{self.url}/{m['repo']}/commit/{oid}",
            "commitOid": oid,
            "pullRequestUrl": pr_url,
        }

    def _writable(self, m):
        if m["repo"] not in self.repos:
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        if self.read_only:
            return 403, {"error": "You don't have the rights to write to this repo"}
        return self.repos[m["repo"]]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    data = self.rfile.read(size)
                    self.rfile.readline()
                    if size == 0:
                        return b"".join(chunks)
                    chunks.append(data)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _answer(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            path, query = unquote(url.path), parse_qs(url.query)
            body = self._body()
            route = next(
                ((name, m) for method, name, pattern in ROUTES if method == self.command
                 for m in [re.fullmatch(pattern, path)] if m),
                None,
            )  # fmt: skip
            if route is None:
                return self._answer(404, {"error": f"no route {self.command} {path}"})
            endpoint, m = route
            with hub._lock:
                hub.requests.append((endpoint, path))
                hub.authorization.append(self.headers.get("Authorization"))
                fault = hub.faults[endpoint].pop(0) if hub.faults.get(endpoint) else None
            if fault == "reset":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return None
            if fault is not None:
                return self._answer(int(fault), {"error": f"injected {fault}"})
            if (
                endpoint not in ("lfs-upload", "agents")
                and self.headers.get("Authorization") != f"Bearer {hub.token}"
            ):
                return self._answer(401, {"error": "Invalid credentials in Authorization header"})
            with hub._lock:
                answer = getattr(hub, endpoint.replace("-", "_"))(m.groupdict(), body, query)
            return self._answer(*answer)

        do_GET = do_POST = do_PUT = _dispatch

    return Handler
