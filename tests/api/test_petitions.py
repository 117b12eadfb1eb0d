"""Deploy petitions as a hostile caller sends them: they read only under the admin's petition roots, never echo a
file, clone only over allowed git transports, and never tell which hosts and ports answer."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.stack import Stack, running_stack, wait_for
from tests.stack import expect_error as _error

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)

CLUSTERS = {"clusters": [{"name": "only", "tier": "edge", "region": "r", "country": "DE", "nodes": [
    {"name": "only-1", "cpu": 2, "memory_mib": 2048}
]}]}  # fmt: skip
SECRET = "s3cr3t-V4lue"
SHADOW = f"root:$6${SECRET}:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"  # each line is a YAML key
DESCRIPTOR = {"description": "from a root", "deployment": {"command": ["sleep", "600"], "ports": []}}
CLONE_TIMEOUT = 3


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one directory the stack's admin allows petitions to read."""
    return tmp_path_factory.mktemp("petition-root").resolve()


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a secret, outside every petition root (like /etc)."""
    folder = tmp_path_factory.mktemp("outside").resolve()
    (folder / "shadow").write_text(SHADOW)
    return folder


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, root: Path) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("petitions")
    clusters = base / "clusters.yaml"
    clusters.write_text(yaml.safe_dump(CLUSTERS))
    env = {
        "NEMO_CLUSTERS_FILE": str(clusters),
        "NEMO_RECONCILE_INTERVAL": "0.3",
        "NEMO_PETITION_ROOTS": f"{root}:{base}",  # base holds the data directory, which stays unreadable
        "NEMO_PETITION_CLONE_TIMEOUT": str(CLONE_TIMEOUT),
        "NEMO_PETITION_CLONE_MAX_MIB": "1",
        "NEMO_PETITION_NETWORKS": "127.0.0.0/8",  # the git servers of these tests listen on loopback
    }
    with running_stack(base / "data", env) as s:
        yield s


def _petition(stack: Stack, pathname: str, name: str = "svc") -> httpx.Response:
    return stack.api("POST", "/petitions", json={"name": name, "pathname": pathname})


def _git_repo(folder: Path, files: dict[str, str | bytes], links: dict[str, str] | None = None) -> Path:
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    for name, target in (links or {}).items():
        (folder / name).symlink_to(target)
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(folder), *args], check=True)
    return folder


def _assert_nothing_deployed(stack: Stack) -> None:
    assert stack.api("GET", "/workloads/svc").status_code == 404


def test_paths_outside_the_roots_are_refused_alike_whether_they_exist_or_not(
    stack: Stack, root: Path, outside: Path
) -> None:
    (root / "to-secret.yaml").symlink_to(outside / "shadow")
    (root / "to-nothing.yaml").symlink_to(outside / "nothing")
    (root / "loop.yaml").symlink_to("loop.yaml")
    (root / "folder").mkdir()
    (root / "folder" / "svc.yaml").symlink_to(outside / "shadow")  # found by name in a folder under the root
    answers = {
        pathname: _petition(stack, pathname)
        for pathname in (
            "/etc/passwd",
            "/etc/no-such-file",
            str(outside / "shadow"),
            str(outside / "nothing"),
            f"{root}/../{outside.name}/shadow",
            str(root / "to-secret.yaml"),
            str(root / "to-nothing.yaml"),
            str(root / "loop.yaml"),
            str(root / "folder"),
            f"file://{outside}",
            f"file://{outside}/nothing",
        )
    }
    bodies = set()
    for pathname, response in answers.items():
        error = _error(response, 403, "forbidden")
        assert "NEMO_PETITION_ROOTS" in error["message"], pathname
        assert SECRET not in response.text and "root:" not in response.text, pathname
        bodies.add(response.text)
    assert len(bodies) == 1  # nothing tells an existing file from a missing one
    _assert_nothing_deployed(stack)


def test_the_data_directory_is_never_readable(stack: Stack) -> None:
    # Even under a root: it holds the admin's credentials, the identity files and the store.
    for pathname in ("admin-credentials.json", "nemo.db", "", "sources"):
        _error(_petition(stack, str(stack.data_dir / pathname)), 403, "forbidden")
    _error(_petition(stack, f"file://{stack.data_dir}"), 403, "forbidden")


def test_a_file_under_a_root_that_is_not_a_descriptor_is_refused_without_its_content(stack: Stack, root: Path) -> None:
    files: dict[str, str | bytes] = {
        "shadow": SHADOW,
        "credentials.json": f'{{"client_id": "nemo-admin", "client_secret": "{SECRET}"}}',
        "broken.yaml": f"description: x\ndeployment: {{command: [sleep]\n  password: {SECRET}\n",
        "tabs.yaml": f"description: x\n\tpassword: {SECRET}\n",
        "list.yaml": f"- {SECRET}\n",
        "binary.yaml": b"\xff\xfe" + SECRET.encode(),
    }
    for name, content in files.items():
        (root / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    for name in files:
        response = _petition(stack, str(root / name))
        error = _error(response, 422, "petition_refused")
        for leak in (SECRET, "root:", "daemon", "client_id", "client_secret", "password", "nemo-admin"):
            assert leak not in response.text, (name, leak)
        assert error["details"] == [{"field": "pathname", "message": error["message"]}]
    broken = _error(_petition(stack, str(root / "broken.yaml")), 422, "petition_refused")
    assert broken["message"] == "descriptor broken.yaml is not valid YAML (line 3, column 3)"
    _assert_nothing_deployed(stack)


def test_a_descriptor_under_a_root_deploys_and_its_errors_name_fields(stack: Stack, root: Path) -> None:
    (root / "invalid.yaml").write_text(yaml.safe_dump({"deployment": {"command": ["x"], "replicas": -1}}))
    error = _error(_petition(stack, str(root / "invalid.yaml")), 422, "invalid")
    assert [d["field"] for d in error["details"]] == ["deployment.replicas"]
    _error(_petition(stack, str(root / "missing.yaml")), 422, "petition_refused")  # inside a root it may say so

    (root / "svc.yaml").write_text(yaml.safe_dump({**DESCRIPTOR, "name": "ignored"}))
    deployed = _petition(stack, str(root / "svc.yaml"))
    assert deployed.status_code == 202, deployed.text
    assert deployed.json()["workload"] == "default/svc"
    w = wait_for(lambda: (x := stack.api("GET", "/workloads/svc").json())["phase"] == "Running" and x, 30, "svc")
    assert w["descriptor"]["description"] == "from a root"
    stack.api("DELETE", "/workloads/svc")
    wait_for(lambda: stack.api("GET", "/workloads/svc").status_code == 404, 30, "svc to be deleted")


def test_a_repository_cannot_lead_out_of_its_checkout(stack: Stack, root: Path, outside: Path) -> None:
    links = {"svc.yaml": str(outside / "shadow"), "loop.yaml": "loop.yaml"}
    repo = _git_repo(root / "linked", {"good.yaml": yaml.safe_dump(DESCRIPTOR)}, links)
    for pathname in (
        f"file://{repo}",  # svc.yaml, found by name, is a symlink to a file outside
        f"file://{repo}#svc.yaml",
        f"file://{repo}#loop.yaml",
        f"file://{repo}#../../{outside.name}/shadow",
        f"file://{repo}#{outside}/shadow",
    ):
        response = _petition(stack, pathname)
        _error(response, 422, "petition_refused")
        assert SECRET not in response.text and "root:" not in response.text, pathname
    _assert_nothing_deployed(stack)
    # A repository outside the roots is refused like any other path.
    elsewhere = _git_repo(outside / "repo", {"svc.yaml": yaml.safe_dump(DESCRIPTOR)})
    _error(_petition(stack, f"file://{elsewhere}"), 403, "forbidden")


def test_only_allowed_git_transports_are_used(stack: Stack, root: Path) -> None:
    _error(_petition(stack, "http://example.org/repo.git"), 403, "forbidden")
    assert "NEMO_PETITION_ALLOW_HTTP" in _petition(stack, "http://127.0.0.1:9/x").json()["error"]["message"]
    marker = root / "ext-ran"
    for pathname in (
        f"ext::sh -c touch% {marker}",
        f"ext::sh%20-c%20touch%20{marker}",
        "fd::0",
        "fd::17/repo",
        "git://127.0.0.1:9/repo.git",
        "ftp://127.0.0.1/repo.git",
        "-uhelp",
        "--upload-pack=touch /tmp/x",
        "ssh://-oProxyCommand=touch%20/tmp/x/repo",
        "git@-oProxyCommand=x:repo",
    ):
        _error(_petition(stack, pathname), 422, "petition_refused")
    assert not marker.exists()
    _assert_nothing_deployed(stack)


def _listening() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server


def test_git_errors_do_not_tell_open_ports_from_closed_ones(stack: Stack) -> None:
    with _listening() as closed_probe:
        closed = closed_probe.getsockname()[1]
    open_port = httpx.URL(stack.url).port  # the API itself: open, speaking plain HTTP
    answers = [_petition(stack, f"https://127.0.0.1:{port}/x.git") for port in (closed, open_port)]
    assert [a.status_code for a in answers] == [422, 422]
    assert answers[0].json() == answers[1].json()
    assert answers[0].json()["error"]["message"].startswith("git clone failed")


def test_a_clone_that_hangs_or_grows_too_large_is_stopped(stack: Stack, root: Path) -> None:
    with _listening() as silent:  # accepts connections and never answers
        port = silent.getsockname()[1]
        error = _error(_petition(stack, f"https://127.0.0.1:{port}/x.git"), 422, "petition_refused")
    assert error["message"] == f"git clone timed out after {CLONE_TIMEOUT} s (NEMO_PETITION_CLONE_TIMEOUT)"

    big = _git_repo(root / "big", {"svc.yaml": yaml.safe_dump(DESCRIPTOR), "blob": os.urandom(3 << 20)})
    error = _error(_petition(stack, f"file://{big}"), 422, "petition_refused")
    assert "NEMO_PETITION_CLONE_MAX_MIB" in error["message"]
    _assert_nothing_deployed(stack)


def test_petition_roots_are_refused_by_default(tmp_path: Path) -> None:
    descriptor = tmp_path / "svc.yaml"
    descriptor.write_text(yaml.safe_dump(DESCRIPTOR))
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    with running_stack(tmp_path / "data", {"NEMO_CLUSTERS_FILE": str(clusters)}) as stack:
        for pathname in (str(descriptor), f"file://{tmp_path}"):
            error: dict[str, Any] = _error(_petition(stack, pathname), 403, "forbidden")
            assert "NEMO_PETITION_ROOTS" in error["message"]
