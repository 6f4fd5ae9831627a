"""A 2 GiB resumable upload through a real uvicorn process and a client process, cut once by a proxy: it resumes,
the stored object has the file's sha256, and neither process's memory grows with the file (docs/benchmarks.md)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.service.support import ROOT, base_env, free_port, start_api

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIB = 1024 * 1024
SIZE = int(os.environ.get("PRUNEKIT_TEST_UPLOAD_MIB", "2048")) * MIB
CHUNK = 32 * MIB
CUT_AFTER = SIZE // 3  # bytes the proxy passes on before it cuts the connection, once
RSS_LIMIT_MIB = 200

_CLIENT = """
import sys
from prunekit.client import PrunekitClient
client = PrunekitClient(sys.argv[1], None, timeout=120)
client.livez()
print("ready", flush=True)
sys.stdin.readline()
print(client.upload_file(sys.argv[2], kind="model").model_dump_json(), flush=True)
"""


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0  # a process that has exited (a zombie) has no VmRSS


def _write_file(path: Path, size: int) -> str:
    """A file of `size` bytes written 1 MiB at a time (never whole in memory); returns its sha256."""
    digest, block = hashlib.sha256(), os.urandom(MIB)
    with path.open("wb") as fh:
        for n in range(size // MIB):
            data = n.to_bytes(8, "big") + block[8:]  # every MiB differs, so a misplaced chunk changes the hash
            digest.update(data)
            fh.write(data)
    return digest.hexdigest()


class CuttingProxy:
    """A TCP proxy to the API that closes the connection carrying byte `cut_after` of the upstream traffic, once."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port, self.cut_after = upstream_port, cut_after
        self.sent, self.cuts = 0, 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(down, up, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, down, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(256 * 1024):
                if upstream and self._should_cut(len(data)):
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _should_cut(self, n: int) -> bool:
        with self._lock:
            self.sent += n
            if self.cuts == 0 and self.sent >= self.cut_after:
                self.cuts = 1
                return True
        return False

    def close(self) -> None:
        self._listener.close()


def test_a_2gib_upload_resumes_after_a_cut_with_flat_memory(tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    expected = _write_file(source, SIZE)
    env = base_env()
    env.update(
        {
            "PRUNEKIT_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
            "PRUNEKIT_BROKER_DIR": str(tmp_path / "broker"),
            "PRUNEKIT_STORAGE_DIR": str(tmp_path / "storage"),
            "PRUNEKIT_AUTH_DISABLED": "true",
            "PRUNEKIT_UPLOAD_CHUNK_BYTES": str(CHUNK),
        }
    )
    port = free_port()
    api = start_api(env, tmp_path, port)
    proxy = CuttingProxy(port, CUT_AFTER)
    try:
        assert api.proc is not None
        client = subprocess.Popen(
            [sys.executable, "-c", _CLIENT, f"http://127.0.0.1:{proxy.port}", str(source)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdin is not None and client.stdout is not None
        assert client.stdout.readline().strip() == "ready"  # imports done: the baselines are the idle processes
        pids = {"api": api.proc.pid, "client": client.pid}
        before = {name: _rss_kib(pid) for name, pid in pids.items()}
        peak = dict(before)
        started = time.monotonic()
        client.stdin.write("\n")
        client.stdin.flush()
        while client.poll() is None:
            for name, pid in pids.items():
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # the client just exited
                    peak[name] = max(peak[name], _rss_kib(pid))
            time.sleep(0.05)
        seconds = time.monotonic() - started
        out = client.stdout.read()
        assert client.returncode == 0, f"client failed:\n{out}\n{api.log_text()[-3000:]}"
        info = json.loads(out.strip().splitlines()[-1])
    finally:
        proxy.close()
        api.stop()
    assert proxy.cuts == 1  # the connection was cut once, and the upload still completed
    assert proxy.sent < SIZE + 2 * CHUNK + 10 * MIB  # resumed at the offset, not sent again from byte 0
    assert info["size"] == SIZE and info["sha256"] == expected
    stored = tmp_path / "storage" / "files" / info["id"]
    assert _sha256_file(stored) == expected
    growth = {name: (peak[name] - before[name]) / 1024 for name in pids}
    print(
        f"\n{SIZE // MIB} MiB in {seconds:.1f} s, one cut at {CUT_AFTER // MIB} MiB; RSS before/peak/growth MiB: "
        + ", ".join(f"{n} {before[n] / 1024:.0f}/{peak[n] / 1024:.0f}/{growth[n]:.1f}" for n in pids)
    )
    for name, mib in growth.items():
        assert mib < RSS_LIMIT_MIB, f"{name} RSS grew by {mib:.1f} MiB during a {SIZE // MIB} MiB upload"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while data := fh.read(MIB):
            digest.update(data)
    return digest.hexdigest()
