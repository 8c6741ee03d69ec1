"""A private MariaDB server that accepts only TLS connections, for the MySQL connector's TLS
checks: a certificate authority and a server certificate for `localhost` made with openssl, a
data folder made with mariadb-install-db, and mariadbd on a free port with
`require_secure_transport=ON`. The machine's own server is left as it is (its TLS is off).
"""

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_certificates(folder):
    """A CA and a server certificate naming only `localhost`, signed by it."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=strata test authority")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=localhost")
    (folder / "server.ext").write_text(
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "server.ext")


@contextlib.contextmanager
def tls_only_mariadb():
    """Yields (port, path of the CA certificate) of a running TLS-only server, root without a
    password; stops it and removes its folder afterwards."""
    for tool in ("openssl", "mariadb-install-db", "mariadbd"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"FAIL: {tool} is needed for the MySQL TLS checks")
    folder = Path(tempfile.mkdtemp(prefix="strata-tls-mariadb-"))
    server = None
    try:
        make_certificates(folder)
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={folder / 'data'}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True)
        port = free_port()
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        server = subprocess.Popen([
            mariadbd, "--no-defaults", f"--datadir={folder / 'data'}", "--user=root", f"--port={port}",
            "--bind-address=127.0.0.1", f"--socket={folder / 'sock'}", f"--pid-file={folder / 'pid'}",
            f"--ssl-ca={folder / 'ca.pem'}", f"--ssl-cert={folder / 'server.pem'}",
            f"--ssl-key={folder / 'server.key'}", "--require-secure-transport=ON", "--skip-log-bin",
            f"--log-error={folder / 'error.log'}",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                connect(port, folder / "ca.pem").close()
                break
            except pymysql.err.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log = (folder / "error.log").read_text() if (folder / "error.log").exists() else ""
                    raise SystemExit(f"FAIL: the TLS MariaDB did not start:\n{log[-3000:]}")
                time.sleep(0.2)
        yield port, folder / "ca.pem"
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(folder, ignore_errors=True)


def connect(port, ca, database=None):
    return pymysql.connect(host="127.0.0.1", port=port, user="root", password="", database=database,
                           ssl={"ca": str(ca), "check_hostname": False}, autocommit=True)
