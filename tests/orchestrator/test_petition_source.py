"""Which git URLs a petition may name, as the settings allow them (the HTTP answers are in tests/api)."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nemo_kernel.config import Settings
from nemo_kernel.orchestrator import PetitionError
from nemo_kernel.orchestrator.petition_source import GitSource, PetitionSources


def _sources(tmp_path: Path, **settings: object) -> PetitionSources:
    return PetitionSources(Settings(data_dir=tmp_path / "data", petition_roots=[tmp_path], **settings))


@pytest.mark.parametrize(
    ("url", "protocol"),
    [
        ("https://git.example.org/team/repo.git", "https"),
        ("https://[::1]:8443/repo", "https"),
        ("ssh://git@git.example.org:2222/team/repo.git", "ssh"),
        ("git@github.com:team/repo.git", "ssh"),
    ],
)
def test_https_and_ssh_urls_are_cloned_with_only_their_own_protocol(tmp_path: Path, url: str, protocol: str) -> None:
    assert _sources(tmp_path).classify(url) == GitSource(url, protocol)


def test_plain_http_needs_the_admin_setting(tmp_path: Path) -> None:
    with pytest.raises(PetitionError) as refused:
        _sources(tmp_path).classify("http://git.example.org/repo.git")
    assert refused.value.status == 403 and "NEMO_PETITION_ALLOW_HTTP" in refused.value.message
    allowed = _sources(tmp_path, petition_allow_http=True).classify("http://git.example.org/repo.git")
    assert allowed == GitSource("http://git.example.org/repo.git", "http")


def test_a_file_repository_is_cloned_by_its_real_path(tmp_path: Path) -> None:
    (tmp_path / "repo.git").mkdir()
    (tmp_path / "alias.git").symlink_to(tmp_path / "repo.git")
    real = f"file://{tmp_path.resolve()}/repo.git"
    assert _sources(tmp_path).classify(f"file://{tmp_path}/alias.git") == GitSource(real, "file")
    assert _sources(tmp_path).classify(str(tmp_path / "alias.git")) == GitSource(real, "file")


@pytest.mark.parametrize(
    "url",
    [
        "git://git.example.org/repo.git",
        "ftp://git.example.org/repo.git",
        "ext::sh -c id",
        "fd::3",
        "-uhelp",
        "ssh://-oProxyCommand=id/repo",
        "https://exa mple.org/repo",
        "https:///repo",
        "https://host:port/repo",
        "user@-oProxyCommand=id:repo",
        "git@host:-repo",
        "file://remote-host/srv/repo",
        "file:///srv/repo%2e%2e",
    ],
)
def test_other_transports_and_malformed_urls_are_refused_before_git_runs(tmp_path: Path, url: str) -> None:
    with pytest.raises(PetitionError) as refused:
        _sources(tmp_path).classify(url)
    assert refused.value.status == 422


def test_a_token_in_a_url_is_never_shown(tmp_path: Path) -> None:
    source = _sources(tmp_path).classify("https://ci:ghp_t0ken@git.example.org/repo.git")
    assert isinstance(source, GitSource)
    assert source.url == "https://ci:ghp_t0ken@git.example.org/repo.git"  # git gets it
    assert source.redacted == "https://***@git.example.org/repo.git"  # messages, events and the log do not


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:9/repo.git",
        "https://localhost/repo.git",
        "https://169.254.169.254/latest/meta-data",  # the cloud metadata service
        "https://10.1.2.3/repo.git",
        "https://[::1]:8443/repo",
        "ssh://git@127.0.0.1:2222/repo.git",
        "git@127.0.0.1:team/repo.git",
        "https://nemo.invalid/repo.git",  # resolves to nothing (RFC 6761): the same answer
    ],
)
def test_a_git_host_that_is_not_on_a_global_address_is_refused_before_git_runs(tmp_path: Path, url: str) -> None:
    sources = _sources(tmp_path)
    source = sources.classify(url)
    assert isinstance(source, GitSource)
    with pytest.raises(PetitionError) as refused:
        sources.clone(source, tmp_path / "checkout")
    assert refused.value.status == 403 and refused.value.code == "forbidden"
    assert "NEMO_PETITION_NETWORKS" in refused.value.message  # one answer, whether or where the host resolves
    assert not (tmp_path / "checkout").exists()


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers 404 to everything, and records the Host header of each request (git's first is info/refs)."""

    hosts: list[str]

    def do_GET(self) -> None:
        self.hosts.append(self.headers.get("Host", ""))
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _recording_server(address: str) -> Iterator[tuple[int, list[str]]]:
    hosts: list[str] = []
    handler = type("Recorder", (_Recorder,), {"hosts": hosts})
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    server_class = type("Server", (http.server.ThreadingHTTPServer,), {"address_family": family})
    with server_class((address, 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server.server_address[1], hosts
        server.shutdown()


@pytest.fixture
def git_server() -> Iterator[tuple[int, list[str]]]:
    """An HTTP server on loopback that a clone reaches (and fails on): its port and the Host headers it saw."""
    with _recording_server("127.0.0.1") as served:
        yield served


def test_a_listed_network_lets_git_reach_it(tmp_path: Path, git_server: tuple[int, list[str]]) -> None:
    port, hosts = git_server
    source = GitSource(f"http://localhost:{port}/repo.git", "http")  # localhost: 127.0.0.1 here
    with pytest.raises(PetitionError) as refused:
        _sources(tmp_path, petition_allow_http=True).clone(source, tmp_path / "checkout")
    assert refused.value.status == 403 and not hosts  # not listed: git never ran

    listed = _sources(tmp_path, petition_allow_http=True, petition_networks=["127.0.0.0/8"])
    assert listed.reachable_address(source) == "127.0.0.1"
    with pytest.raises(PetitionError) as failed:  # it reached the server, which has no repository
        listed.clone(source, tmp_path / "checkout")
    assert failed.value.status == 422 and hosts and hosts[0] == f"localhost:{port}"


def test_git_connects_to_the_address_checked_not_to_a_second_lookup(
    tmp_path: Path, git_server: tuple[int, list[str]]
) -> None:
    # A name that resolves nowhere (RFC 6761), pinned to the loopback server: only the pin can take git there.
    port, hosts = git_server
    source = GitSource(f"http://nemo.invalid:{port}/repo.git", "http")
    sources = _sources(tmp_path, petition_allow_http=True, petition_networks=["127.0.0.0/8"])
    with pytest.raises(PetitionError):
        sources._run_git(source, "127.0.0.1", tmp_path / "checkout", tmp_path)
    assert hosts and hosts[0] == f"nemo.invalid:{port}"  # the name kept in Host, the connection to the address


@pytest.mark.parametrize(
    ("address", "network", "host"), [("127.0.0.1", "127.0.0.0/8", "127.0.0.1"), ("::1", "::1/128", "[::1]")]
)
def test_a_git_host_given_as_an_address_is_reached_at_that_address(
    tmp_path: Path, address: str, network: str, host: str
) -> None:
    # An IP literal is checked as it is and needs no pinning (git's resolve list may not parse "[::1]").
    with _recording_server(address) as (port, hosts):
        source = GitSource(f"http://{host}:{port}/repo.git", "http")
        listed = _sources(tmp_path, petition_allow_http=True, petition_networks=[network])
        assert listed.reachable_address(source) == address
        with pytest.raises(PetitionError) as failed:  # it reached the server, which has no repository
            listed.clone(source, tmp_path / "checkout")
        assert failed.value.status == 422, failed.value.message
        assert hosts and hosts[0] == f"{host}:{port}"
