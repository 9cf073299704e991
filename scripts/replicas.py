"""N local ``rmserve serve`` replicas on loopback behind nginx or HAProxy on 127.0.0.1 (GRPO-group affinity).

    python scripts/replicas.py --replicas 3 --proxy nginx --port 8080 --grpc-port 50050 --time 600 -- --max-wait-ms 5
    make replicas REPLICAS=3 PROXY=nginx REPLICAS_TIME=600 REPLICAS_ARGS="--model DIR"

Starts the replicas on free loopback ports (REST and gRPC), waits until each is ready, starts the proxy
from deploy/nginx.conf or deploy/haproxy.cfg (hash on ``x-rmserve-group``; HAProxy: REST only), prints
the URLs, and serves until Ctrl-C, SIGTERM or ``--time`` seconds. Then it stops the proxy and the
replicas (SIGTERM: each drains) and removes its working directory. Everything listens on 127.0.0.1.
``Cluster`` is the same thing as a context manager, for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROXIES = ("nginx", "haproxy", "none")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Replica:
    index: int
    port: int
    grpc_port: int
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Cluster:
    """``replicas`` servers behind ``proxy`` ("none": no proxy, e.g. to compare with independent servers).

    ``launcher`` is the command before ``serve`` (default ``python -m rmserve``; tests pass a slowed
    model's launcher); ``serve_args`` go to every replica.
    """

    replicas: int = 3
    proxy: str = "nginx"
    port: int = 0
    grpc_port: int = 0
    serve_args: Sequence[str] = ()
    launcher: Sequence[str] = (sys.executable, "-m", "rmserve")
    balance: str = "hash"  # "hash": on x-rmserve-group (the configs as shipped); "round_robin": for comparison
    ready_timeout_s: float = 300.0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rmserve-replicas-")))
    members: list[Replica] = field(default_factory=list)
    proxy_proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}" if self.proxy != "none" else self.members[0].url

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    # ── lifecycle ──────────────────────────────────────────────────────────────────────────

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            print(f"replica and proxy logs kept in {self.workdir}", file=sys.stderr)
            raise
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        self.stop()
        if exc_type is None:
            self.cleanup()
        else:  # keep the logs of a failed run
            print(f"replica and proxy logs kept in {self.workdir}", file=sys.stderr)

    def start(self) -> None:
        if self.proxy not in PROXIES:
            raise ValueError(f"proxy must be one of {PROXIES}, not {self.proxy!r}")
        self.port = self.port or free_port()
        self.grpc_port = self.grpc_port or free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for k in range(self.replicas):
            replica = Replica(k, free_port(), free_port(), self.workdir / f"replica-{k}.log")
            argv = [*self.launcher, "serve", "--host", "127.0.0.1", "--port", str(replica.port),
                    "--grpc-port", str(replica.grpc_port), *self.serve_args]
            with open(replica.log_path, "w") as log:
                replica.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
            self.members.append(replica)
        for replica in self.members:
            self._wait_ready(replica.url + "/readyz", lambda r=replica: r.alive(), f"replica {replica.index}",
                             replica.log)
        if self.proxy != "none":
            self._start_proxy()
            self._wait_ready(self.url + "/readyz", lambda: self.proxy_proc.poll() is None, self.proxy,
                             self.proxy_log)

    def _wait_ready(self, url: str, alive, name: str, log) -> None:
        end = time.monotonic() + self.ready_timeout_s
        while True:
            if not alive():
                raise RuntimeError(f"{name} exited before it was ready:\n{log()[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                raise RuntimeError(f"{name} not ready after {self.ready_timeout_s:.0f} s:\n{log()[-3000:]}")
            time.sleep(0.2)

    def _start_proxy(self) -> None:
        binary = shutil.which(self.proxy) or shutil.which(self.proxy, path="/usr/sbin:/usr/local/sbin")
        if binary is None:
            raise RuntimeError(f"{self.proxy} is not installed: scripts/install_proxies.sh (Debian: apt-get install "
                               f"nginx-light haproxy)")
        prefix = self.workdir / self.proxy
        prefix.mkdir(exist_ok=True)
        # nginx started as root runs its workers as nobody: they must reach the temp dirs under here.
        self.workdir.chmod(0o755)
        prefix.chmod(0o755)
        if self.proxy == "nginx":
            servers = "\n".join(f"        server 127.0.0.1:{r.port} max_fails=1 fail_timeout=2s;" for r in self.members)
            grpc = "\n".join(f"        server 127.0.0.1:{r.grpc_port} max_fails=1 fail_timeout=2s;"
                             for r in self.members)
            text = (DEPLOY / "nginx.conf").read_text()
            fields = {"PREFIX": str(prefix), "LISTEN": f"127.0.0.1:{self.port}", "SERVERS": servers,
                      "GRPC_LISTEN": f"127.0.0.1:{self.grpc_port}", "GRPC_SERVERS": grpc}
            conf = prefix / "nginx.conf"
            argv = [binary, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
            check = [binary, "-t", "-p", str(prefix), "-c", str(conf)]
        else:
            servers = "\n".join(f"    server r{r.index} 127.0.0.1:{r.port}" for r in self.members)
            text = (DEPLOY / "haproxy.cfg").read_text()
            fields = {"PREFIX": str(prefix), "LISTEN": f"127.0.0.1:{self.port}", "SERVERS": servers}
            conf = prefix / "haproxy.cfg"
            argv = [binary, "-db", "-f", str(conf)]
            check = [binary, "-c", "-f", str(conf)]
        for name, value in fields.items():
            text = text.replace("{{" + name + "}}", value)
        if self.balance == "round_robin":  # nginx's default balancing; HAProxy's roundrobin
            text = text.replace("hash $rmserve_group consistent;", "").replace("balance hdr(x-rmserve-group)",
                                                                                 "balance roundrobin")
        elif self.balance != "hash":
            raise ValueError(f"balance must be hash or round_robin, not {self.balance!r}")
        conf.write_text(text)
        checked = subprocess.run(check, capture_output=True, text=True)
        if checked.returncode != 0:
            raise RuntimeError(f"{self.proxy} refused the configuration {conf}:\n{checked.stdout}{checked.stderr}")
        with open(prefix / "proxy.log", "w") as log:
            self.proxy_proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=prefix)

    def proxy_log(self) -> str:
        text = ""
        for name in ("proxy.log", "error.log"):
            path = self.workdir / self.proxy / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    def kill(self, index: int) -> None:
        """SIGKILL one replica (no drain): what a crash or an OOM kill looks like to the proxy."""
        replica = self.members[index]
        if replica.alive():
            replica.proc.kill()
            replica.proc.wait()

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.proxy_proc is not None and self.proxy_proc.poll() is None:
            self.proxy_proc.terminate()
            try:
                self.proxy_proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proxy_proc.kill()
                self.proxy_proc.wait()
        for replica in self.members:
            if replica.alive():
                replica.proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + timeout_s
        for replica in self.members:
            if replica.proc is None:
                continue
            try:
                replica.proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                replica.proc.kill()
                replica.proc.wait()

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ── observation ────────────────────────────────────────────────────────────────────────

    def metrics(self) -> list[dict[str, float]]:
        """Each replica's /metrics samples (``name{labels}`` -> value); empty for a replica that is down."""
        out = []
        for replica in self.members:
            samples: dict[str, float] = {}
            if replica.alive():
                for line in httpx.get(replica.url + "/metrics", timeout=10).text.splitlines():
                    if line and not line.startswith("#"):
                        sample, _, value = line.rpartition(" ")
                        samples[sample] = float(value)
            out.append(samples)
        return out


def total(samples: dict[str, float], name: str, *label_parts: str) -> float:
    """The sum of ``name``'s samples whose labels contain every one of ``label_parts`` (e.g. 'status="200"')."""
    return sum(v for k, v in samples.items()
               if k.split("{", 1)[0] == name and all(part in k for part in label_parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Arguments after -- go to every `rmserve serve`.")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--proxy", choices=PROXIES[:2], default="nginx")
    parser.add_argument("--port", type=int, default=8080, help="the proxy's REST port on 127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=50050, help="the proxy's gRPC port (nginx only)")
    parser.add_argument("--time", type=float, default=600.0, help="stop everything after this many seconds")
    args, serve_args = parser.parse_known_args(argv)
    serve_args = [a for a in serve_args if a != "--"]
    cluster = Cluster(args.replicas, args.proxy, args.port, args.grpc_port, serve_args)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with cluster:
            print(f"{args.replicas} replicas behind {args.proxy}: REST {cluster.url}"
                  + (f", gRPC grpc://{cluster.grpc_target}" if args.proxy == "nginx" else ""), flush=True)
            for r in cluster.members:
                print(f"  replica {r.index}: {r.url} (gRPC 127.0.0.1:{r.grpc_port}), log {r.log_path}", flush=True)
            print(f"serving for at most {args.time:.0f} s; Ctrl-C stops everything", flush=True)
            end = time.monotonic() + args.time
            while time.monotonic() < end:
                if not all(r.alive() for r in cluster.members):
                    print("a replica exited; stopping", file=sys.stderr)
                    return 1
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.cleanup()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
