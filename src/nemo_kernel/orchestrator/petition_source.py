"""Where a deploy petition may take its descriptor from, and how a git repository is cloned safely.

A petition names a local path or a git URL, read or fetched as the ``nemo up`` user. Local paths (and ``file://``
repositories) are allowed only under the directories an admin lists in ``NEMO_PETITION_ROOTS``, after resolving
symlinks, and never inside the data directory; a refusal is the same whether the path exists or not. Git speaks
only ``https``, ``ssh`` (``ssh://`` or ``user@host:path``), ``file`` (under a root) and, when an admin allows it,
``http``; git itself is held to the one protocol of the checked URL, without the user's git configuration,
credential helpers, prompts or hooks, within a time and a size limit. git's own messages go to the server log only:
they tell a caller which hosts and ports answer.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from nemo_kernel.config import Settings
from nemo_kernel.domain.addresses import AddressAllowlist
from nemo_kernel.domain.errors import ApiError

log = logging.getLogger(__name__)

_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_REMOTE_HELPER = re.compile(r"[A-Za-z0-9+.-]+::")  # git's `transport::address` (ext::, fd::, ...)
_SCP_LIKE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9][A-Za-z0-9.-]*:[^\s:-]\S*")
_SCP_ATTEMPT = re.compile(r"[^/:]*@[^/]*:")  # what git would take for scp-like ssh
_HOST = re.compile(r"[a-z0-9][a-z0-9.-]*|[0-9a-f:.]+")  # urlsplit's hostname: lower-case, IPv6 unbracketed
_POLL_SECONDS = 0.2
# Only what git and ssh need to find programs, an ssh agent and a proxy; nothing of the user's git setup.
_PASSED_ENVIRONMENT = ("PATH", "SSH_AUTH_SOCK", "https_proxy", "HTTPS_PROXY", "http_proxy", "no_proxy", "NO_PROXY")

ROOTS_SETTING = "NEMO_PETITION_ROOTS"
NETWORKS_SETTING = "NEMO_PETITION_NETWORKS"
_DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22}
SUPPORTED = "https://, ssh://, user@host:path, or file:// under a petition root"


class PetitionError(ApiError):
    """A petition that cannot be carried out (bad source, no descriptor found); nothing was stored.

    Its message and details never hold a file's content or keys, nor say whether a path outside the petition roots
    exists: they are answered to the caller as is and recorded in events."""

    def __init__(
        self, message: str, *, status: int = 422, code: str = "petition_refused", details: list[Any] | None = None
    ) -> None:
        super().__init__(status, code, message, details or [{"field": "pathname", "message": message}])


def forbidden(message: str) -> PetitionError:
    """A 403 refusal of a petition's source by the server's policy."""
    return PetitionError(message, status=403, code="forbidden")


@dataclass(frozen=True)
class GitSource:
    """A git URL that passed the checks, and the one git protocol it may use."""

    url: str
    protocol: str

    @property
    def redacted(self) -> str:
        """The URL without its user part (a password or a token), for messages and the log."""
        parts = urlsplit(self.url)
        if "@" not in parts.netloc:
            return self.url
        return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))

    @property
    def endpoint(self) -> tuple[str, int] | None:
        """The host and port git connects to; None for a ``file://`` repository."""
        if self.protocol == "file":
            return None
        if "://" not in self.url:  # scp-like ``user@host:path``
            return self.url.partition("@")[2].partition(":")[0].lower(), _DEFAULT_PORTS["ssh"]
        parts = urlsplit(self.url)
        return (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS[self.protocol]


class PetitionSources:
    """The server's policy for petition sources: which paths may be read, which repositories cloned, and how."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._networks = AddressAllowlist.of(NETWORKS_SETTING, settings.petition_networks)

    def classify(self, source: str) -> GitSource | Path:
        """A checked git source, or the real path of an allowed local file or folder; PetitionError otherwise."""
        if source.startswith("-") or not source.isprintable():
            raise PetitionError(f"pathname must be a path or a git URL ({SUPPORTED})")
        if scheme := _URL_SCHEME.match(source):
            return self._url(source, scheme.group(1).lower())
        if _REMOTE_HELPER.match(source):
            raise PetitionError(f"git transport not supported; use {SUPPORTED}")
        if _SCP_LIKE.fullmatch(source):
            return GitSource(source, "ssh")
        if _SCP_ATTEMPT.match(source):
            raise PetitionError(f"not a valid user@host:path git URL; use {SUPPORTED}")
        path = self.allowed(Path(source))
        return GitSource(f"file://{path}", "file") if path.name.endswith(".git") else path

    def allowed(self, path: Path) -> Path:
        """``path`` with its symlinks resolved, when that is under a petition root and outside the data directory.

        The refusal is a 403 with the same message whether the path exists or not; only inside a root may an
        answer say that something does not exist."""
        if not self._settings.petition_roots:
            raise forbidden(
                f"petitions may not read local paths or file:// repositories on this server: an admin allows "
                f"directories by listing them in {ROOTS_SETTING} (absolute paths separated by ':')"
            )
        real = self.resolved(path)
        try:
            existing = real.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise PetitionError(f"pathname {str(path)!r} does not exist") from exc
        return self.resolved(existing)  # again: a symlink may have been swapped in meanwhile

    def resolved(self, path: Path) -> Path:
        """``path`` with its symlinks followed as far as they exist; 403 unless that is under a petition root and
        outside the data directory. Not strict, so the answer never depends on whether the path exists."""
        roots = [root.resolve() for root in self._settings.petition_roots]
        private = self._settings.data_dir.resolve()
        try:
            real: Path | None = path.expanduser().resolve()
        except (OSError, RuntimeError):
            real = None  # a symlink loop or an unknown home: outside every root
        if real is None or not any(real.is_relative_to(root) for root in roots) or real.is_relative_to(private):
            raise forbidden(
                f"pathname is not under a directory allowed for petitions: an admin lists them in {ROOTS_SETTING}"
            )
        return real

    def _url(self, source: str, scheme: str) -> GitSource:
        if scheme == "file":
            parts = urlsplit(source)
            if parts.netloc not in ("", "localhost") or parts.query or "%" in parts.path or not parts.path:
                raise PetitionError("a file:// URL names an absolute path on this server: file:///path/to/repo")
            return GitSource(f"file://{self.allowed(Path(parts.path))}", "file")
        if scheme == "http" and not self._settings.petition_allow_http:
            raise forbidden(
                "plain http:// repositories are not allowed: use https://, or an admin sets "
                "NEMO_PETITION_ALLOW_HTTP=true"
            )
        if scheme not in ("https", "http", "ssh"):
            raise PetitionError(f"git URL scheme {scheme}:// not supported; use {SUPPORTED}")
        if any(c.isspace() for c in source):
            raise PetitionError("a git URL has no spaces")
        try:
            parts = urlsplit(source)
            host, _ = parts.hostname, parts.port  # .port raises ValueError when it is not a number
        except ValueError:
            host = None
        if not host or not _HOST.fullmatch(host):
            raise PetitionError(f"git URL has no valid host; use {SUPPORTED}")
        return GitSource(source, scheme)

    def clone(self, source: GitSource, dest: Path) -> Path:
        """Clone ``source`` (its default branch, one commit) into ``dest``, replacing what was there."""
        address = self.reachable_address(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=dest.parent))
        try:
            with tempfile.TemporaryDirectory(prefix=".git-home-", dir=dest.parent) as home:
                self._run_git(source, address, tmp / "checkout", Path(home))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(dest, ignore_errors=True)
        (tmp / "checkout").rename(dest)
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("petition cloned %s (%s) into %s", source.redacted, source.protocol, dest)
        return dest

    def reachable_address(self, source: GitSource) -> str | None:
        """The address git may connect to for ``source``, resolved once (None for ``file://``); 403 when its host
        resolves to no address, or to one that is not global (loopback, private, link-local: the cloud metadata
        service) and not listed in NEMO_PETITION_NETWORKS. A petition must not make the server a proxy into its own
        network (SSRF), nor may the name resolve elsewhere when git looks it up again (DNS rebinding): git is pinned
        to this address. The answer is the same whether the host does not resolve or resolves where it may not go."""
        endpoint = source.endpoint
        if endpoint is None:
            return None
        host, port = endpoint
        try:
            addresses = list(
                dict.fromkeys(str(i[4][0]) for i in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            )
        except (OSError, UnicodeError) as exc:
            addresses, why = [], f"does not resolve ({exc})"
        else:
            refusals = [r for r in map(self._networks.refusal, addresses) if r is not None]
            why = refusals[0] if refusals else ""
        if not addresses or why:
            log.warning("petition: git host %s refused: %s", host, why or "no address")
            raise forbidden(
                f"git host {host} does not resolve to an address petitions may reach: a global one, or one an admin "
                f"lists in {NETWORKS_SETTING}"
            )
        return addresses[0]

    def _run_git(self, source: GitSource, address: str | None, checkout: Path, home: Path) -> None:
        timeout = max(1, int(self._settings.petition_clone_timeout))
        ssh = f"ssh -o BatchMode=yes -o ConnectTimeout={timeout}"
        pinned: list[str] = []
        if address is not None and source.endpoint is not None:
            host, port = source.endpoint
            if source.protocol == "ssh":  # connect to the address checked; the host key is still the name's
                ssh += f" -o HostName={address} -o HostKeyAlias={host}"
            else:  # no redirect elsewhere; a name is pinned with curl's --resolve to the address checked
                pinned = ["-c", "http.followRedirects=false"]
                if not _is_address(host):  # an address is what was checked; curl cannot parse "::1:443:[::1]"
                    literal = f"[{address}]" if ":" in address else address
                    pinned += ["-c", f"http.curloptResolve={host}:{port}:{literal}"]
        env = {name: os.environ[name] for name in _PASSED_ENVIRONMENT if name in os.environ}
        env.update(
            HOME=str(home),  # an empty home: no ~/.gitconfig, credential helpers or url rewrites of the user
            XDG_CONFIG_HOME=str(home),
            GIT_CONFIG_NOSYSTEM="1",
            GIT_CONFIG_GLOBAL=os.devnull,
            GIT_ALLOW_PROTOCOL=source.protocol,  # also binds redirects, submodules and remote helpers
            GIT_TERMINAL_PROMPT="0",
            GIT_SSH_COMMAND=ssh,  # never asks for a password
            LC_ALL="C",
        )
        command = [
            "git",
            "-c", "protocol.allow=never",
            "-c", f"protocol.{source.protocol}.allow=always",
            "-c", "credential.helper=",
            *pinned,
            "-c", "http.lowSpeedLimit=1024",
            "-c", f"http.lowSpeedTime={timeout}",
            "clone", "--quiet", "--depth", "1", "--single-branch", "--no-tags", "--no-recurse-submodules",
            "--template=",  # no hooks or other files from a template directory
            "--", source.url, str(checkout),
        ]  # fmt: skip
        with tempfile.TemporaryFile() as stderr:
            # Its own session, so that a timeout or the size limit stops git and every helper it started.
            proc = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                start_new_session=True,
            )  # fmt: skip
            try:
                failure = self._watch(proc, checkout)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            if failure is None:
                return
            stderr.seek(0)
            detail = stderr.read(4096).decode(errors="replace").strip()
        log.warning("petition: git clone of %s: %s: %s", source.redacted, failure, detail)
        raise PetitionError(failure)

    def _watch(self, proc: subprocess.Popen[bytes], checkout: Path) -> str | None:
        """Wait for git within the time and size limits: None when it cloned, else what to answer."""
        settings = self._settings
        too_large = (
            f"git clone stopped: larger than {settings.petition_clone_max_mib} MiB (NEMO_PETITION_CLONE_MAX_MIB)"
        )
        limit = settings.petition_clone_max_mib << 20
        deadline = time.monotonic() + settings.petition_clone_timeout
        while True:
            try:
                code = proc.wait(_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    return (
                        f"git clone timed out after {settings.petition_clone_timeout:g} s (NEMO_PETITION_CLONE_TIMEOUT)"
                    )
                if _size(checkout) > limit:
                    return too_large
                continue
            if code != 0:
                return "git clone failed (the server log has git's message)"  # git's stderr tells which ports answer
            return None if _size(checkout) <= limit else too_large  # a fast clone may finish between two looks


def _is_address(host: str) -> bool:
    """Whether a URL's host is an IP literal rather than a name (``urlsplit`` drops an IPv6 literal's brackets)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _size(folder: Path) -> int:
    """Bytes of the files under ``folder`` (symlinks counted as links, not followed)."""
    total = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except OSError:
                continue  # git moved or removed it meanwhile
    return total
