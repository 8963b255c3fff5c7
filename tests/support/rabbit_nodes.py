"""RabbitMQ nodes of the tests' own, started from the installed ``rabbitmq-server``.

Never the system broker on 5672: every node here has its own name, ports, data and log
directories, config, enabled plugins, ``HOME`` (with its own ``.erlang.cookie``: the CLI reads
the cookie from ``$HOME``) and ``RABBITMQ_CONF_ENV_FILE`` (so ``/etc/rabbitmq/rabbitmq-env.conf``,
which names the system node, is not read), and stays on loopback. ``stop()`` always runs; a node
that does not stop is killed by its PID. See PITFALLS.md, "Clusters".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def require_rabbitmq_server() -> None:
    """Skip on a laptop without RabbitMQ installed; in CI that is a failure."""
    if SERVER.exists() and CTL.exists():
        return
    message = f"{SERVER} is not installed: the node tests start nodes of their own from it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class RabbitNode:
    """One node: ``start()``, ``ctl(...)``, ``stop()``; ``url`` for AMQP (or AMQPS)."""

    base: Path
    cookie: str
    config: str = ""  # more rabbitmq.conf lines
    plugins: tuple[str, ...] = ()
    name: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}@localhost")
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.home = self.base / "home"
        for folder in (self.home, self.base / "mnesia", self.base / "log"):
            folder.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        (self.base / "env.conf").write_text("")
        advanced = self.base / "advanced.config"
        if not advanced.exists():
            advanced.write_text("[].\n")
        (self.base / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        self.write_config()

    def write_config(self) -> None:
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n" + self.config
        )

    @property
    def env(self) -> dict[str, str]:
        base = self.base
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(base / "pid"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def url(self, user: str = "guest", password: str = "guest", *, port: int | None = None) -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{port or self.port}/"

    def start(self, timeout: float = 90.0) -> float:
        """Start the node and wait until it has booted; return how long that took."""
        started = time.monotonic()
        log = (self.base / "out.log").open("ab")
        self.process = subprocess.Popen(
            [str(SERVER)], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        # `wait` waits for the PID file, then for the boot: `await_startup` alone can ask
        # before the node has even registered its name.
        self.ctl(
            "wait", str(self.base / "pid"), "--timeout", str(int(timeout)), timeout=timeout + 10
        )
        return time.monotonic() - started

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        done = subprocess.run(
            [str(CTL), "-n", self.name, *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            tail = (self.base / "out.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} on {self.name}: {done.stderr.strip()}\n{tail}"
            )
        return done.stdout

    def stop(self) -> None:
        """Stop the node, whatever state it is in (frozen nodes are woken first)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGCONT)
        with contextlib.suppress(Exception):
            self.ctl("stop", timeout=30)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None


def remove(base: Path) -> None:
    shutil.rmtree(base, ignore_errors=True)


@dataclass
class Cluster:
    """Three nodes joined into one cluster (the first is the seed), with a short net tick so a
    frozen node is declared down in seconds rather than a minute."""

    base: Path
    net_ticktime_s: int = 10
    nodes: list[RabbitNode] = field(default_factory=list)

    def start(self, size: int = 3) -> float:
        """Start and join ``size`` nodes; return how long it took."""
        started = time.monotonic()
        cookie = uuid.uuid4().hex
        for n in range(size):
            node = RabbitNode(self.base / f"n{n}", cookie=cookie)
            (node.base / "advanced.config").write_text(
                f"[{{kernel, [{{net_ticktime, {self.net_ticktime_s}}}]}}].\n"
            )
            self.nodes.append(node)
            node.start()
            if n:
                node.ctl("stop_app")
                node.ctl("join_cluster", self.nodes[0].name)
                node.ctl("start_app")
        return time.monotonic() - started

    def urls(self, *, first: int = 0) -> str:
        """Every node's URL, comma-separated, starting with node ``first``."""
        order = self.nodes[first:] + self.nodes[:first]
        return ",".join(node.url() for node in order)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
