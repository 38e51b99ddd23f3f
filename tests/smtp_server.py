"""A real SMTP server for the email channel's tests: aiosmtpd in its own process.

Run as ``python tests/smtp_server.py --dir DIR --mode starttls|smtps|plain [...]``, it listens
on 127.0.0.1, prints ``READY <port>`` once it accepts connections, and writes each message it
accepts to ``DIR/NNNNNN.eml`` (the bytes as received) with ``DIR/NNNNNN.json`` beside it (the
TCP connection's number, envelope, whether TLS was on, the AUTH mechanism and user); every
connection adds a line to ``DIR/connections.log``.  Recipients starting with ``refuse`` get
``550``, with ``later`` get ``451``.  Imported, it offers :class:`SmtpServerProcess` (start,
stop, kill, read the messages back) and :func:`make_certificate` (a throwaway CA and a server
certificate for 127.0.0.1 and localhost).  Test support only: never used by the daemon.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from ipaddress import ip_address
from pathlib import Path
from typing import Any

#: How long :meth:`SmtpServerProcess.start` waits for ``READY``.
START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Certificate:
    """
    PEM files of a throwaway CA and a server certificate it signed.
    """

    ca_pem: bytes
    cert_file: str
    key_file: str


def make_certificate(directory: str) -> Certificate:
    """
    A CA and a server certificate for ``127.0.0.1`` and ``localhost``, valid for a day.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamsrv test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file = os.path.join(directory, "server.pem")
    key_file = os.path.join(directory, "server.key")
    Path(cert_file).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(key_file).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Certificate(ca.public_bytes(serialization.Encoding.PEM), cert_file, key_file)


@dataclass(frozen=True)
class Received:
    """
    One message the server accepted: its parsed form and what the server saw.
    """

    message: EmailMessage
    raw: bytes
    connection: int
    mail_from: str
    rcpt_tos: list[str]
    tls: bool
    auth_mechanism: str | None
    auth_user: str | None


class SmtpServerProcess:
    """
    ``tests/smtp_server.py`` as a child process on a free port of 127.0.0.1.
    """

    def __init__(
        self,
        directory: str,
        mode: str,
        certificate: Certificate | None = None,
        user: str | None = None,
        password: str | None = None,
        exclude_auth: tuple[str, ...] = (),
        port: int = 0,
    ) -> None:
        self.directory = directory
        self.mode = mode
        self.certificate = certificate
        self.user = user
        self.password = password
        self.exclude_auth = exclude_auth
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """
        Start the server and wait for its ``READY <port>`` line.
        """
        command = [
            sys.executable,
            __file__,
            "--dir",
            self.directory,
            "--mode",
            self.mode,
            "--port",
            str(self.port),
        ]
        if self.certificate is not None:
            command += ["--cert", self.certificate.cert_file, "--key", self.certificate.key_file]
        if self.user is not None and self.password is not None:
            command += ["--user", self.user, "--password", self.password]
        for mechanism in self.exclude_auth:
            command += ["--exclude-auth", mechanism]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self._process.stdout is not None
        while time.monotonic() < deadline:
            line = self._process.stdout.readline()
            if not line:
                break
            if line.startswith(b"READY "):
                self.port = int(line.split()[1])
                return
        self.stop()
        raise RuntimeError("the test SMTP server did not start")

    def stop(self) -> None:
        """
        Stop the server (SIGTERM, then SIGKILL) if it runs.
        """
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def connections(self) -> int:
        """
        How many TCP connections the server has accepted.
        """
        log = Path(self.directory, "connections.log")
        return len(log.read_text().splitlines()) if log.exists() else 0

    def received(self) -> list[Received]:
        """
        Every message accepted so far, in order, parsed with :mod:`email`.
        """
        found = []
        for meta_file in sorted(Path(self.directory).glob("*.json")):
            meta = json.loads(meta_file.read_text())
            raw = meta_file.with_suffix(".eml").read_bytes()
            message = BytesParser(policy=policy.default).parsebytes(raw)
            assert isinstance(message, EmailMessage)
            found.append(
                Received(
                    message=message,
                    raw=raw,
                    connection=meta["connection"],
                    mail_from=meta["mail_from"],
                    rcpt_tos=meta["rcpt_tos"],
                    tls=meta["tls"],
                    auth_mechanism=meta["auth_mechanism"],
                    auth_user=meta["auth_user"],
                )
            )
        return found


def _serve(options: argparse.Namespace) -> None:
    """
    Run aiosmtpd until SIGTERM (the child process's main).
    """
    import asyncio
    import ssl

    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

    directory = Path(options.dir)
    # A restarted server (same directory) numbers on from where the last one stopped.
    log_file = directory / "connections.log"
    counter = {
        "connections": len(log_file.read_text().splitlines()) if log_file.exists() else 0,
        "messages": len(list(directory.glob("*.json"))),
    }

    class Recorder:
        async def handle_RCPT(
            self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
        ) -> str:
            if address.startswith("refuse"):
                return "550 5.1.1 No such user here"
            if address.startswith("later"):
                return "451 4.3.0 Mailbox busy, try again later"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            counter["messages"] += 1
            stem = directory / f"{counter['messages']:06d}"
            stem.with_suffix(".eml").write_bytes(envelope.original_content)
            login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
            meta = {
                "connection": server.connection_number,
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "tls": session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None,
                "auth_mechanism": getattr(session, "auth_mechanism", None),
                "auth_user": login,
            }
            stem.with_suffix(".json").write_text(json.dumps(meta))
            return "250 2.0.0 Message accepted for delivery"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == options.user
            and auth_data.password.decode() == options.password
        )
        if ok:
            session.auth_mechanism = mechanism
        if not ok:
            return AuthResult(success=False, handled=False)  # aiosmtpd answers 535
        return AuthResult(success=True, auth_data=auth_data)

    tls_context = None
    if options.cert:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(options.cert, options.key)

    class CountingSMTP(SMTP):
        connection_number = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            if self.transport is None:
                counter["connections"] += 1
                self.connection_number = counter["connections"]
                with (directory / "connections.log").open("a") as log:
                    log.write(f"{self.connection_number}\n")
            super().connection_made(transport)

    def factory() -> SMTP:
        auth = options.user is not None
        return CountingSMTP(
            Recorder(),
            hostname="localhost",
            tls_context=tls_context if options.mode == "starttls" else None,
            require_starttls=options.mode == "starttls",
            auth_required=auth,
            auth_require_tls=options.mode == "starttls",
            authenticator=authenticator if auth else None,
            auth_exclude_mechanism=options.exclude_auth,
            decode_data=False,
            timeout=60,
        )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            factory, "127.0.0.1", options.port, ssl=tls_context if options.mode == "smtps" else None
        )
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        port = server.sockets[0].getsockname()[1]
        sys.stdout.write(f"READY {port}\n")
        sys.stdout.flush()
        parent = os.getppid()
        while not stop.is_set() and os.getppid() == parent:
            # Also stop when the test process is gone, so no server outlives its test run.
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
        server.close()

    asyncio.run(main())


def temporary_directory(prefix: str = "streamsrv-smtp-") -> str:
    """
    A new empty directory for one server's messages.
    """
    return tempfile.mkdtemp(prefix=prefix)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--mode", choices=("starttls", "smtps", "plain"), required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--exclude-auth", action="append", default=[])
    _serve(parser.parse_args())
