"""The TLS settings refused before any connection: TLS options on plain amqp://, EXTERNAL
without a client certificate."""

from __future__ import annotations

import pytest

from worker.core.errors import ConfigError
from worker.settings import WorkerSettings


def test_the_settings_refuse_tls_options_on_plain_amqp() -> None:
    with pytest.raises(ConfigError, match="need amqps://"):
        WorkerSettings(amqp_url="amqp://guest:guest@localhost/", tls_ca_file="ca.pem")
    with pytest.raises(ConfigError, match="needs a client certificate"):
        WorkerSettings(amqp_url="amqps://localhost/", auth_mechanism="external")
