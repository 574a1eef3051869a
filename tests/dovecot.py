"""A private Dovecot for the IMAP tests (shared/docs/dovecot-for-tests.md): one server per session.

Everything lives in a temporary folder under /tmp, the server listens on 127.0.0.1 only and reads
nothing from /etc/dovecot. Every test gets its own mail user (a static passdb takes any user with
the session's password), so tests never see each other's mail and nothing needs cleaning up.
A machine without Dovecot fails these tests with the install command: CI must install it.
"""

from __future__ import annotations

import contextlib
import grp
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from imapclient import IMAPClient

PASSWORD = "s3cret-test-pw"
INSTALL = "apt-get update && apt-get install -y dovecot-imapd"


@dataclass(frozen=True)
class Account:
    """One mail user of the private server; ``maildir`` is its INBOX on disk."""

    user: str
    host: str
    port: int
    maildir: Path
    password: str = PASSWORD

    def url(self, mailbox: str = "INBOX") -> str:
        return f"imap://{self.user}@{self.host}:{self.port}/{mailbox}"


def _tool(name: str) -> str | None:
    """``dovecot``/``doveadm`` on PATH, or in /usr/sbin where Debian puts them (not on a user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@dataclass
class Dovecot:
    """The running server: start/stop/restart it, add users, put mail in, change UIDVALIDITY."""

    dir: Path
    port: int = 0
    tls_port: int = 0
    proc: subprocess.Popen | None = None
    _users: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def conf(self) -> Path:
        return self.dir / "dovecot.conf"

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def _ids(self) -> tuple[int, int]:
        if self.as_root:
            nobody = pwd.getpwnam("nobody")
            return nobody.pw_uid, nobody.pw_gid
        return os.getuid(), os.getgid()

    def _write_conf(self) -> None:
        if self.as_root:
            internal, internal_group, login = "dovecot", "dovecot", "dovenull"
            mail_user, mail_group = "nobody", grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
        else:
            internal = login = mail_user = pwd.getpwuid(os.getuid()).pw_name
            internal_group = mail_group = grp.getgrgid(os.getgid()).gr_name
        d = self.dir
        self.conf.write_text(f"""\
# Private test instance; nothing from /etc/dovecot is read.
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{d}/tls/server.pem
ssl_key = <{d}/tls/server.key
disable_plaintext_auth = no
auth_failure_delay = 0
auth_mechanisms = plain login
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
mail_location = maildir:{d}/mail/%u
mail_uid = {mail_user}
mail_gid = {mail_group}
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
}}
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={d}/mail/%u
}}
# no auth penalty (anvil delays every login from an address after a failure): the tests measure
# the bot's own backoff, and a wrong password in one test must not slow down the next
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
  }}
}}
""")

    def start(self) -> None:
        """Start the master in the foreground (we own it) and wait for the greeting."""
        for sub in ("run", "state", "mail"):
            (self.dir / sub).mkdir(exist_ok=True)
        if self.as_root:
            uid, gid = self._ids()
            os.chown(self.dir / "mail", uid, gid)
            self.dir.chmod(0o711)  # the login and mail users must traverse DIR
        self._make_certificates()
        for _attempt in range(5):
            self.port = self.port or _free_port()
            self.tls_port = self.tls_port or _free_port()
            self._write_conf()
            log = self.dir / "dovecot.log"
            mark = log.stat().st_size if log.exists() else 0
            self.proc = subprocess.Popen([_tool("dovecot"), "-F", "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if self._wait_ready():
                return
            self.stop()
            text = log.read_text(errors="replace")[mark:] if log.exists() else ""
            if "Address already in use" not in text:
                pytest.fail(f"private dovecot did not start; {log}:\n{text[-2000:]}")
            self.port = self.tls_port = 0
        pytest.fail("private dovecot: no free port after 5 tries")

    @property
    def ca_file(self) -> Path:
        """The private CA that signed the server's certificate (for ``imaps://`` with ``ca_file``)."""
        return self.dir / "tls" / "ca.pem"

    def _make_certificates(self) -> None:
        """A throw-away CA and a server certificate for 127.0.0.1/localhost (openssl command line)."""
        tls = self.dir / "tls"
        if (tls / "server.pem").exists():
            return
        if not shutil.which("openssl"):
            pytest.fail("the IMAP tests need the openssl command (apt-get install -y openssl) for a test CA")
        tls.mkdir(exist_ok=True)
        (tls / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for cmd in (
            ["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3", "-subj", "/CN=test CA"],
            ["req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "3", "-extfile", "san.ext"],
        ):
            proc = subprocess.run(["openssl", *cmd], cwd=tls, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, f"openssl {' '.join(cmd)}: {proc.stderr}"

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Stop the master and wait for its children (they hold the port and the files)."""
        if self.proc is None:
            return
        kids = _children(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        for kid in kids:  # imap processes would linger ~10 s before their BYE; a restart should not
            with contextlib.suppress(ProcessLookupError):
                os.kill(kid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self) -> None:
        """Stop and start on the same port (connected clients get BYE and a closed socket)."""
        self.stop()
        self.start()

    # --- mail users and their mail ---------------------------------------------------------------

    def new_account(self, prefix: str = "u") -> Account:
        """A fresh mail user with an empty INBOX and Sent folder."""
        user = f"{prefix}{next(self._users)}"
        maildir = self.dir / "mail" / user
        for folder in (maildir, maildir / ".Sent"):
            for sub in ("new", "cur", "tmp"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
        self._own(maildir)
        return Account(user=user, host="127.0.0.1", port=self.port, maildir=maildir)

    def _own(self, path: Path) -> None:
        if not self.as_root:
            return
        uid, gid = self._ids()
        for p in [path, *path.rglob("*")]:
            os.lchown(p, uid, gid)

    def folder_dir(self, account: Account, folder: str = "INBOX") -> Path:
        return account.maildir if folder.upper() == "INBOX" else account.maildir / f".{folder.replace('/', '.')}"

    def deliver(self, account: Account, raw: bytes, folder: str = "INBOX", name: str | None = None) -> Path:
        """Deliver as an MTA does: write tmp/NAME, then rename it into new/ (thousands per second)."""
        box = self.folder_dir(account, folder)
        if not (box / "new").is_dir():
            for sub in ("new", "cur", "tmp"):
                (box / sub).mkdir(parents=True, exist_ok=True)
            self._own(box)
        name = name or f"{time.time_ns()}.P{os.getpid()}Q{next(self._users)}.test"
        tmp = box / "tmp" / name
        tmp.write_bytes(raw)
        if self.as_root:
            os.chown(tmp, *self._ids())
        return tmp.rename(box / "new" / name)

    def client(self, account: Account, folder: str | None = "INBOX") -> IMAPClient:
        c = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        c.login(account.user, account.password)
        if folder:
            c.select_folder(folder)
        return c

    def append(self, account: Account, raw: bytes, folder: str = "INBOX", flags: tuple[bytes, ...] = ()) -> int:
        """APPEND over IMAP (slow, ~300/s); returns the new UID."""
        c = self.client(account, None)
        try:
            resp = c.append(folder, raw, flags=flags)
        finally:
            c.logout()
        return int(resp.split(b"]")[0].split()[-1])  # [APPENDUID validity uid]

    def flags(self, account: Account, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
        """UID -> stored flags of every message in ``folder`` (read-only; \\Recent, per session, left out)."""
        c = self.client(account, None)
        try:
            c.select_folder(folder, readonly=True)
            uids = c.search("ALL")
            data = c.fetch(uids, ["FLAGS"]) if uids else {}
            return {uid: tuple(f for f in d[b"FLAGS"] if f != b"\\Recent") for uid, d in sorted(data.items())}
        finally:
            c.logout()

    def set_uidvalidity(self, account: Account, value: int, folder: str = "INBOX") -> None:
        self.doveadm("mailbox", "update", "-u", account.user, "--uid-validity", str(value), folder)

    def doveadm(self, *args: str) -> str:
        proc = subprocess.run([_tool("doveadm"), "-c", str(self.conf), *args], capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == 0, f"doveadm {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """The session's private Dovecot; fails (never skips) where Dovecot is not installed."""
    if not _tool("dovecot") or not _tool("doveadm"):
        pytest.fail(f"the IMAP tests need Dovecot: {INSTALL} (CI: .ci/run installs it; "
                    "see ../shared/docs/dovecot-for-tests.md)")
    work = Path(tempfile.mkdtemp(prefix="inbox-bot-dovecot-", dir="/tmp"))
    server = Dovecot(work)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def imap_account(dovecot: Dovecot) -> Account:
    """A fresh, empty mail user on the session's Dovecot."""
    return dovecot.new_account()
