"""``WorkerSettings``: the one typed configuration of ``self-optimiser run``.

Built once at start-up from, in increasing precedence: the defaults below, an optional TOML
file (flat ``name = value`` pairs) and the environment (``OPTIMISER_<NAME>``). The optimiser's
guardrails (``OptimiserConfig``) are settings too, under the same flat names. Nothing reads the
environment at import time. The AMQP URL's password never appears in a ``repr`` or a log.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from yarl import URL

from schemas.names import DELIVERY_LIMIT, RETENTION_S
from worker.core.config import OptimiserConfig, setting
from worker.core.errors import ConfigError
from worker.core.guards import state_window_s

ENV_PREFIX: Final = "OPTIMISER_"
_NAMESPACE: Final = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True, repr=False)
class WorkerSettings:
    """Everything the worker needs to run; invalid values raise ``ConfigError``."""

    amqp_url: str = setting(
        "amqp://guest:guest@localhost:5672/",
        "Broker URL (amqp:// or amqps://, with the vhost); for a cluster, several separated by "
        "commas, tried in turn.",
    )
    tls_ca_file: str = setting(
        "", "TLS: the CA bundle (PEM) that signed the broker's certificate; empty: the system's."
    )
    tls_cert_file: str = setting("", "TLS: a client certificate (PEM), for mutual TLS.")
    tls_key_file: str = setting("", "TLS: the client certificate's key (PEM, no passphrase).")
    tls_server_name: str = setting(
        "", "TLS: the name the broker's certificate must carry, if not the host in amqp_url."
    )
    tls_verify: bool = setting(
        True, "TLS: false accepts any certificate (logged as a WARNING; never in production)."
    )
    auth_mechanism: str = setting(
        "plain", "plain (user and password) or external (the client certificate names the user)."
    )
    namespace: str = setting(
        "optimiser", "Prefix of every queue and exchange (N.plans, N.results, N.review, ...)."
    )
    metrics_host: str = setting("0.0.0.0", "Address of the /metrics, /healthz, /readyz server.")
    metrics_port: int = setting(9464, "Port of that server; 0 picks a free one, -1 turns it off.")
    prefetch: int = setting(
        32, "Plans the broker may hand the worker before it acks any (they wait their turn)."
    )
    publish_timeout_s: float = setting(
        10.0, "A publish not confirmed by the broker within this many seconds has failed."
    )
    connect_timeout_s: float = setting(10.0, "Time allowed for one connection attempt.")
    connect_retry_s: float = setting(
        120.0, "At start-up, keep retrying a broker that does not answer for this long."
    )
    heartbeat_s: int = setting(60, "AMQP heartbeat interval; a silent broker is dropped after ~3.")
    shutdown_grace_s: float = setting(
        30.0, "On SIGTERM, how long the plans in hand may take to finish."
    )
    max_plan_bytes: int = setting(
        1_048_576, "Larger plan bodies are parked in N.plans.invalid unread."
    )
    dedup_window_s: float = setting(
        3600.0, "An action id seen this recently is never enacted again; its record is replayed."
    )
    remember_limit: int = setting(1_000_000, "Most action ids remembered for that, newest kept.")
    state_retention_s: int = setting(
        RETENTION_S, "How long N.results.log keeps records; must cover the two windows above."
    )
    state_timeout_s: float = setting(
        60.0,
        "At start-up, the longest the state streams may go without a message read before the "
        "restore fails and is tried again (a long restore that makes progress goes on); for "
        "the command-line tools, the time allowed to read them.",
    )
    checkpoint_records: int = setting(
        50_000,
        "The worker enacting plans writes a checkpoint of the state log (N.checkpoints) after "
        "this many new records, so that a restart reads the checkpoints and only the records "
        "after them; 0: no checkpoints (a restart reads the whole state window).",
    )
    checkpoint_interval_s: float = setting(
        300.0, "A checkpoint is written at least this often while there are new records."
    )
    fence_timeout_s: float = setting(
        10.0,
        "Before each plan the worker reads both state streams up to a marker of its own; "
        "slower than this, it enacts nothing (the plan may be another worker's now) and tries "
        "again while the delivery is still its own.",
    )
    fence_reuse_s: float = setting(
        0.05,
        "A fence serves the plans after it on the same channel for this long (not a "
        "redelivered plan, which always fences): far below takeover_wait_s and the seconds a "
        "cluster takes to declare a node down; 0: a fence before every plan.",
    )
    takeover_wait_s: float = setting(
        5.0,
        "A redelivered plan is enacted no sooner than this after it arrived, and after a "
        "second fence: time for the records of the worker that lost it (in flight when its "
        "node failed) to reach the state log, so its actions are replayed, not enacted again.",
    )
    outage_wait_s: float = setting(
        300.0,
        "An action in hand whose publish (a review item) finds the broker gone waits this "
        "long for it to come back before the action is FAILED.",
    )
    delivery_limit: int = setting(
        DELIVERY_LIMIT, "A plan delivered this often without an ack goes to N.plans.dead."
    )
    declare_topology: bool = setting(
        True,
        "Declare the namespace's queues and exchanges at start-up; false: only check they "
        "exist (created from deploy/'s definitions, for a worker user that may not configure).",
    )
    queue_poll_s: float = setting(
        15.0, "How often the queue depth gauges are read from the broker; 0 turns that off."
    )
    optimiser: OptimiserConfig = dataclasses.field(default_factory=OptimiserConfig)

    def __post_init__(self) -> None:
        for address in self.amqp_urls:
            try:
                url = URL(address)  # the parser aio-pika uses
                valid = url.scheme in ("amqp", "amqps") and bool(url.host)
            except (ValueError, TypeError):
                valid = False
            if not valid:
                raise ConfigError(
                    "amqp_url must look like amqp://user:password@host:5672/vhost, or several "
                    "of those separated by commas (special characters in a password "
                    "%-escaped)"
                )
        if self.auth_mechanism not in ("plain", "external"):
            raise ConfigError(
                f"auth_mechanism must be 'plain' or 'external', not {self.auth_mechanism!r}"
            )
        tls = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file, self.tls_server_name)
        plain_tcp = [u for u in self.amqp_urls if not u.startswith("amqps://")]
        if (any(tls) or not self.tls_verify or self.auth_mechanism == "external") and plain_tcp:
            raise ConfigError(
                "the TLS settings (tls_*, auth_mechanism = external) need amqps:// broker URLs"
            )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.auth_mechanism == "external" and not self.tls_cert_file:
            raise ConfigError(
                "auth_mechanism = external needs a client certificate (tls_cert_file)"
            )
        if not _NAMESPACE.match(self.namespace):
            raise ConfigError(
                f"namespace {self.namespace!r} must be 1 to 64 letters, digits, '_', '-' or '.'"
            )
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError("metrics_port must be between -1 and 65535")
        if not 1 <= self.prefetch <= 65535:
            raise ConfigError("prefetch must be between 1 and 65535")
        for name in ("publish_timeout_s", "connect_timeout_s", "shutdown_grace_s"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ConfigError(f"{name} must be a positive number of seconds")
        if not 0 <= self.connect_retry_s < float("inf"):
            raise ConfigError("connect_retry_s must be >= 0")
        if self.heartbeat_s < 0:
            raise ConfigError("heartbeat_s must be >= 0 (0 turns heartbeats off)")
        if self.max_plan_bytes < 1:
            raise ConfigError("max_plan_bytes must be >= 1")
        if self.delivery_limit < 1 or self.remember_limit < 1:
            raise ConfigError("delivery_limit and remember_limit must be >= 1")
        if self.checkpoint_records < 0 or not 0 < self.checkpoint_interval_s < float("inf"):
            raise ConfigError("checkpoint_records must be >= 0 and checkpoint_interval_s > 0")
        if not 0 <= self.fence_reuse_s <= 1:
            raise ConfigError("fence_reuse_s must be between 0 and 1 second")
        if not 0 <= self.takeover_wait_s < float("inf"):
            raise ConfigError("takeover_wait_s must be >= 0 seconds")
        for name in ("state_timeout_s", "fence_timeout_s", "outage_wait_s"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ConfigError(f"{name} must be a positive number of seconds")
        if not 0 <= self.queue_poll_s < float("inf"):
            raise ConfigError("queue_poll_s must be >= 0 (0 turns the queue gauges off)")
        if not 0 <= self.dedup_window_s < float("inf"):
            raise ConfigError("dedup_window_s must be >= 0")
        if self.state_retention_s < self.state_window_s:
            raise ConfigError(
                f"state_retention_s ({self.state_retention_s}) must be at least "
                f"{self.state_window_s:g}, the longest of dedup_window_s and the guardrails' "
                f"windows: the stream must still hold what a restart needs to read"
            )

    @property
    def state_window_s(self) -> float:
        """How far back a restarting worker reads ``N.results.log``: the longest window of
        any guardrail (each says its own) and of the remembered action ids."""
        return max(state_window_s(self.optimiser), self.dedup_window_s)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={self.safe_url if name == 'amqp_url' else value!r}"
            for name, value in self._values()
        )
        return f"WorkerSettings({shown})"

    def _values(self) -> Iterator[tuple[str, Any]]:
        for each in dataclasses.fields(self):
            yield each.name, getattr(self, each.name)

    @property
    def amqp_urls(self) -> list[str]:
        """The broker addresses, in the order they are tried."""
        return [part.strip() for part in self.amqp_url.split(",") if part.strip()] or [""]

    @property
    def safe_url(self) -> str:
        """The broker URL(s) with each password replaced by ``***``, for logs."""
        return ", ".join(redact_url(address) for address in self.amqp_urls)


_CREDENTIALS: Final = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):(?P<secret>.*)@")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``.

    Works on the raw text: a password with an unescaped ``/``, ``?`` or ``#`` (common in
    generated ones) defeats URL parsers, which would then hand the URL back unredacted.
    Everything between ``user:`` and the last ``@`` goes.
    """
    return _CREDENTIALS.sub(lambda m: f"{m.group('head')}:***@", url, count=1)


def setting_fields() -> list[tuple[dataclasses.Field[Any], bool]]:
    """Every flat setting: (field, belongs to OptimiserConfig)."""
    worker = [(f, False) for f in dataclasses.fields(WorkerSettings) if f.name != "optimiser"]
    return worker + [(f, True) for f in dataclasses.fields(OptimiserConfig)]


def load_settings(environ: Mapping[str, str], config_file: Path | None = None) -> WorkerSettings:
    """Defaults, then ``config_file`` (TOML), then ``OPTIMISER_*`` variables of ``environ``."""
    raw: dict[str, Any] = {}
    known = {f.name: f for f, _ in setting_fields()}
    if config_file is not None:
        try:
            table = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file} is not valid TOML: {exc}") from None
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ConfigError(f"{config_file}: unknown setting(s) {', '.join(unknown)}")
        for name, value in table.items():
            raw[name] = _coerce(known[name], value, source=f"{config_file}: {name}")
    for name, each in known.items():
        variable = ENV_PREFIX + name.upper()
        if variable in environ:
            raw[name] = _coerce(each, environ[variable], source=variable)
    optimiser_names = {f.name for f in dataclasses.fields(OptimiserConfig)}
    optimiser = OptimiserConfig(**{k: v for k, v in raw.items() if k in optimiser_names})
    return WorkerSettings(
        **{k: v for k, v in raw.items() if k not in optimiser_names}, optimiser=optimiser
    )


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _coerce(each: dataclasses.Field[Any], value: Any, *, source: str) -> Any:
    kind = each.type if isinstance(each.type, str) else each.type.__name__
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise ConfigError(f"{source}: {value!r} is not a boolean (true/false)")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return int(str(value).strip().replace("_", ""))
        except ValueError:
            raise ConfigError(f"{source}: {value!r} is not a whole number") from None
    if kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value).strip())
        except ValueError:
            raise ConfigError(f"{source}: {value!r} is not a number") from None
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {value!r} is not a string")
    return value


def settings_help() -> str:
    """The settings as ``--help`` lists them: name, variable, default, meaning."""
    lines = ["settings (TOML name = environment variable, default):"]
    for each, _ in setting_fields():
        default = each.default
        shown = redact_url(str(default)) if each.name == "amqp_url" else default
        lines.append(f"  {each.name} = {ENV_PREFIX}{each.name.upper()} (default: {shown})")
        lines.append(f"      {each.metadata['help']}")
    return "\n".join(lines)
