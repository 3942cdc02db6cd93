"""Login time: `POST /identity/v3/auth/tokens` against a real `shelf api` (standalone, in
its own process) by a client in this process over loopback, and the Argon2id
verification alone. `python -m bench.login [--store sqlite|postgres] [--logins N]`."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from application.auth.passwords import HASHER, hash_secret
from bench.common import bench_store, store_options

PASSWORD = "bench-password-1234"


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)

    def ms(quantile: float) -> float:
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] * 1000

    return f"p50 {ms(0.5):6.1f} ms   p90 {ms(0.9):6.1f} ms   max {ms(1):6.1f} ms"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _shelf(store: str, data: Path, *argv: str, stdin: str | None = None,
           wait: bool = True) -> subprocess.Popen[str]:
    env = {**os.environ, "SHELF_DATA_DIR": str(data), "SHELF_LOG_LEVEL": "error"}
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "--store", store, *argv],
                               env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True)
    if wait:
        process.communicate(stdin)
    return process


def _login_body() -> dict[str, object]:
    return {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "bench", "domain": {"name": "Default"}, "password": PASSWORD}}},
        "scope": {"project": {"name": "bench", "domain": {"name": "Default"}}}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    store_options(parser)
    parser.add_argument("--logins", type=int, default=50)
    args = parser.parse_args()
    secret_hash = hash_secret(PASSWORD)
    verify = []
    for _ in range(args.logins):
        started = time.perf_counter()
        HASHER.verify(secret_hash, PASSWORD)
        verify.append(time.perf_counter() - started)
    print(f"argon2id verify alone:  {_percentiles(verify)}")
    with bench_store(args.store, args.keep) as store, tempfile.TemporaryDirectory() as data:
        _shelf(store, Path(data), "user", "create", "bench", "--project", "bench", "--role",
               "member", "--password-stdin", stdin=PASSWORD + "\n")
        port = _free_port()
        api = _shelf(store, Path(data), "api", "--listen", f"127.0.0.1:{port}", wait=False)
        try:
            url = f"http://127.0.0.1:{port}/identity/v3/auth/tokens"
            with httpx.Client(timeout=30) as client:
                _wait_until_up(client, f"http://127.0.0.1:{port}/identity/v3")
                client.post(url, json=_login_body())  # warm: the first loads the user
                logins = []
                for _ in range(args.logins):
                    started = time.perf_counter()
                    answer = client.post(url, json=_login_body())
                    logins.append(time.perf_counter() - started)
                    assert answer.status_code == 201, answer.text
            print(f"login over HTTP ({args.store}): {_percentiles(logins)}")
        finally:
            api.terminate()
            api.wait(timeout=30)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def _wait_until_up(client: httpx.Client, url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.get(url).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("shelf api did not start")
        time.sleep(0.1)


if __name__ == "__main__":
    main()
