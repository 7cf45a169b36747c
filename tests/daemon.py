"""Run the real glacierd as a process and talk to it over HTTP, as curl would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class Response:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Response:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Response(resp.status, resp.read(), dict(resp.headers))
    except urllib.error.HTTPError as err:
        return Response(err.code, err.read(), dict(err.headers))


class Daemon:
    """``glacierd serve`` in a subprocess; logs go to a file the test can read."""

    def __init__(self, config: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.base = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, **(env or {})}
        self.log_path = config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True, timeout: float = 30) -> Daemon:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "glacierd", "--config", str(self.config), "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"glacierd exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.request("GET", "/health").status in (200, 503):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"glacierd did not become healthy:\n{self.logs()}")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        return http(method, self.base + path, data, hdrs)

    def wait_for(
        self, predicate: Any, timeout: float = 30, interval: float = 0.2, what: str = "condition"
    ) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}; last={last!r}\n{self.logs()[-4000:]}")

    def wait_backup(self, backup_id: int, timeout: float = 60) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            r = self.request("GET", f"/backups/{backup_id}")
            b = r.json()
            return b if r.status == 200 and b["status"] != "running" else None

        return self.wait_for(done, timeout, what=f"backup {backup_id} to finish")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"glacierd did not stop within {timeout}s:\n{self.logs()}"
            ) from None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out
