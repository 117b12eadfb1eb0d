"""A private RabbitMQ node for destructive tests: own node name, ports, data directory, TLS listener, management API.

Recipe: ../shared/notes/test-services.md. The machine's shared broker (node ``rabbit``) is never touched.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# For each local quorum queue whose Ra server is a follower (a single-node queue should be its own leader), trigger an
# election; evaluates to the list of Ra names nudged.
_ELECT_LEADERLESS = (
    "[begin ra:trigger_election({R, node()}), R end || Q <- rabbit_amqqueue:list(), "
    "amqqueue:get_type(Q) =:= rabbit_quorum_queue, {R, _} <- [amqqueue:get_pid(Q)], "
    "element(1, catch sys:get_state({R, node()}, 5000)) =:= follower]."
)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ctl(node: str | None, *args: str, timeout: float = 60) -> str:
    """Run ``rabbitmqctl`` (against ``node``, or the machine's default node) and return its output."""
    cmd = ["rabbitmqctl", *(["-n", node] if node else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout}{done.stderr}")
    return done.stdout


@dataclass
class Certificates:
    """A test PKI: CA, broker certificate (localhost / 127.0.0.1), one client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_certificates(folder: Path, client_cn: str = "orchestrator") -> Certificates:
    """Generate a CA and a server and a client certificate signed by it (EC P-256, valid one day)."""
    now = datetime.datetime.now(datetime.UTC)

    def issue(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name | None,
        issuer_key: ec.EllipticCurvePrivateKey,
        *,
        ca: bool = False,
        server: bool = False,
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = issue("nemo test CA", ca_key, None, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = issue("localhost", server_key, ca_cert.subject, ca_key, server=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = issue(client_cn, client_key, ca_cert.subject, ca_key)
    certs = Certificates(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )
    certs.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    certs.server_key.write_bytes(_key_pem(server_key))
    certs.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    certs.client_key.write_bytes(_key_pem(client_key))
    return certs


class PrivateRabbit:
    """One private RabbitMQ node: plain AMQP, AMQPS (peer verification), management API; all on loopback."""

    def __init__(self) -> None:
        self.tag = f"nemotest{os.getpid()}{secrets.token_hex(2)}"
        self.node = f"{self.tag}@localhost"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        self.amqp_port = free_port()
        self.tls_port = free_port()
        self.mgmt_port = free_port()
        self.dist_port = free_port()
        self.admin_user = "nemo-admin"
        self.admin_password = secrets.token_urlsafe(16)
        self.certs = make_certificates(self.dir)

    @property
    def mgmt_url(self) -> str:
        """Base URL of the management HTTP API."""
        return f"http://127.0.0.1:{self.mgmt_port}"

    def url(self, user: str, password: str, vhost: str = "nemo", *, tls: bool = False) -> str:
        """AMQP URL of this node for a user and vhost."""
        if tls:
            return f"amqps://{user}:{password}@localhost:{self.tls_port}/{vhost}"
        return f"amqp://{user}:{password}@127.0.0.1:{self.amqp_port}/{vhost}"

    def start(self) -> None:
        """Start the node and wait until AMQP and the management API answer (or raise after a deadline)."""
        (self.dir / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}",
                    f"listeners.ssl.1 = 127.0.0.1:{self.tls_port}",
                    f"ssl_options.cacertfile = {self.certs.ca}",
                    f"ssl_options.certfile = {self.certs.server_cert}",
                    f"ssl_options.keyfile = {self.certs.server_key}",
                    "ssl_options.verify = verify_peer",
                    "ssl_options.fail_if_no_peer_cert = true",
                    f"management.tcp.port = {self.mgmt_port}",
                    "management.tcp.ip = 127.0.0.1",
                    "",
                ]
            )
        )
        (self.dir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        shutil.chown(self.dir, "rabbitmq", "rabbitmq")
        for path in self.dir.iterdir():
            shutil.chown(path, "rabbitmq", "rabbitmq")
        self._launch()
        ctl(self.node, "add_user", self.admin_user, self.admin_password)
        ctl(self.node, "set_user_tags", self.admin_user, "administrator")
        ctl(self.node, "set_permissions", "-p", "/", self.admin_user, ".*", ".*", ".*")

    def _launch(self) -> None:
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
        }
        subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True, timeout=60)
        self.await_running()

    def kill(self) -> int:
        """SIGKILL the node's Erlang VM (no shutdown of any kind) and wait until it is gone; returns its pid."""
        beam = psutil.Process(int((self.dir / "pid").read_text().strip()))
        assert "beam" in beam.name(), f"pid file names {beam.name()}, not the Erlang VM"
        beam.kill()
        beam.wait(30)
        return beam.pid

    def restart(self) -> list[str]:
        """Start the node again on the same data directory (after :meth:`kill`) and wait until it serves.

        RabbitMQ 3.10.8 (the version here) sometimes brings a single-node quorum queue back from an unclean stop as
        a follower that never calls an election: it stays leaderless and every operation on it times out (seen in
        about every other SIGKILL under load; ``sys:get_state`` shows ``follower``, status ``waiting``). What an
        operator does then is ask the queue to hold an election; this does it for every quorum queue still a
        follower once the node is up, and returns their Ra names (so a test can say it happened).
        """
        self._launch()
        nudged = ctl(self.node, "eval", _ELECT_LEADERLESS).strip()
        return [name for name in nudged.strip("[]").replace("'", "").split(",") if name]

    def await_running(self, timeout: float = 90) -> None:
        """Wait until the node's application runs and the management API answers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                ctl(self.node, "await_startup", "--timeout", "60", timeout=70)
                break
            except RuntimeError:
                # The node's Erlang VM may not be registered yet: await_startup needs it reachable.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        while True:
            try:
                if httpx.get(f"{self.mgmt_url}/api/overview", timeout=2).status_code in (200, 401):
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("management API of the private node did not come up")
            time.sleep(0.2)

    def stop_app(self) -> None:
        """Stop the RabbitMQ application (every connection drops), keeping the Erlang VM."""
        ctl(self.node, "stop_app")

    def start_app(self) -> None:
        """Start the application again and wait until it serves."""
        ctl(self.node, "start_app")
        self.await_running()

    def stop(self) -> None:
        """Stop the node (kill it if it does not stop) and remove its directory."""
        try:
            ctl(self.node, "stop", timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            pid_file = self.dir / "pid"
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text().strip()), 9)
        shutil.rmtree(self.dir, ignore_errors=True)
