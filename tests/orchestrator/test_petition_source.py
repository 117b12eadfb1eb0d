"""Which git URLs a petition may name, as the settings allow them (the HTTP answers are in tests/api)."""

from __future__ import annotations

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
