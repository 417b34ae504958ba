"""A local Milvus standalone server, for development, tests and benchmarks.

Wraps the ``milvus`` package ("embedded Milvus" 2.3.x: the real standalone server
binary) and fixes what its own wrapper leaves to the caller:

* **Ports**: every port is chosen free at start (or kept across a restart), and bound
  with ``SO_REUSEADDR`` when probed, so a restart right after a stop does not trip on
  sockets in TIME_WAIT.
* **Loopback**: every component advertises 127.0.0.1 and etcd listens on loopback only.
  The 2.3 server binaries bind their gRPC ports on all interfaces (there is no listen
  address setting in 2.3; ``*.ip`` is the advertised address), so on a shared network
  run it behind a firewall or in its own network namespace.
* **Crashes**: readiness is polled on the health port *and* the process, so a server
  that dies while starting raises at once with the end of its log, and
  :meth:`LocalMilvus.alive` says whether it is still running. A watchdog process kills
  the server if the process that started it dies without stopping it.

    with LocalMilvus("/tmp/milvus-data") as server:
        print(server.uri)   # http://127.0.0.1:PORT for --milvus-uri
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from crossmodal.errors import Unavailable

#: run beside the server: kills it when the process that started it dies (a killed test
#: run must not leave a server holding its ports, etcd's fixed 2380 among them)
WATCHDOG = """
import os, signal, sys, time
owner, server = int(sys.argv[1]), int(sys.argv[2])
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
while alive(server):
    if not alive(owner) or os.getppid() == 1:
        os.kill(server, signal.SIGKILL)
        break
    time.sleep(0.5)
"""

COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexCoord", "indexNode", "dataCoord", "dataNode")


#: the health check talks to our own loopback port: never through a proxy (urllib's
#: default opener takes http_proxy from the environment, and keeps what it saw first)
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class LocalMilvus:
    """One Milvus standalone process over ``data_dir``."""

    def __init__(self, data_dir: str | os.PathLike, ready_timeout: float = 120.0):
        try:
            import milvus  # noqa: F401
        except ImportError:
            raise Unavailable("a local Milvus server needs the milvus package: pip install milvus") from None
        self.data_dir = Path(data_dir)
        self.ready_timeout = ready_timeout
        self.ports: dict[str, int] = {}
        self.health_port = 0
        self._server = None
        self._watchdog: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy_port']}"

    @property
    def pid(self) -> int | None:
        proc = self._server.server_proc if self._server else None
        return proc.pid if proc else None

    def alive(self) -> bool:
        proc = self._server.server_proc if self._server else None
        return proc is not None and proc.poll() is None

    def start(self) -> "LocalMilvus":
        from milvus import MilvusServer, MilvusServerConfig

        class Config(MilvusServerConfig):
            def try_bind_port(self, port):  # probe like the Go listeners will bind: reuse TIME_WAIT ports
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                    sock.listen()
                    return sock
                except OSError:
                    sock.close()
                    return None

        config = Config()
        if not self.ports:
            self.ports = {key: free_port() for key in config.configurable_items if key.endswith("_port")}
            self.health_port = free_port()
        server = MilvusServer(config, wait_for_started=False, **self.ports)
        server.set_base_dir(str(self.data_dir))
        for component in COMPONENTS:
            server.config.set(f"{component}.ip", "127.0.0.1")
        server.webservice_port = self.health_port
        server.start()
        self._server = server
        self._watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid()),
                                           str(server.server_proc.pid)], start_new_session=True)
        self.health_port = server.webservice_port
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.time() + self.ready_timeout
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        while time.time() < deadline:
            if not self.alive():
                raise Unavailable(f"the Milvus server exited while starting; its log ends:\n{self.log_tail()}")
            try:
                with _LOOPBACK.open(url, timeout=2) as resp:
                    if b"OK" in resp.read():
                        return
            except OSError:
                pass
            time.sleep(0.2)
        tail = self.log_tail()  # before stopping: the stop's own lines would hide why it was not ready
        self.stop()
        raise Unavailable(f"the Milvus server was not ready in {self.ready_timeout:.0f} s (health: {url}); "
                          f"its log ends:\n{tail}")

    def log_tail(self, lines: int = 20) -> str:
        log = self.data_dir / "logs" / "milvus-stdout.log"
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; the process is gone when this returns.
        (The 2.3.5 standalone binary does not exit on SIGTERM or SIGINT within 30 s here;
        its inserts are in its write-ahead log by then, so the kill loses nothing: the
        restart test checks it.)"""
        if self._server is None:
            return
        proc = self._server.server_proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._server.server_proc = None
        self._server.stop()  # closes its log files
        self._server = None
        if self._watchdog is not None:
            self._watchdog.wait(timeout=10)  # it exits once the server is gone
            self._watchdog = None

    def restart(self) -> "LocalMilvus":
        """Stop and start again on the same data and the same ports (the same URI)."""
        self.stop()
        return self.start()

    def __enter__(self) -> "LocalMilvus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
