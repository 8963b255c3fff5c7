"""Settings: defaults, TOML, environment, errors, and what --help and logs show."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.support.broker import broker_url_or_skip, discover_broker
from worker.cli import main
from worker.core.errors import ConfigError
from worker.settings import WorkerSettings, load_settings, redact_url, setting_fields


def test_defaults_are_the_documented_wire_names() -> None:
    settings = load_settings({})
    assert settings.amqp_url == "amqp://guest:guest@localhost:5672/"
    assert settings.namespace == "optimiser"
    assert settings.metrics_port == 9464


def test_the_environment_overrides_the_file_which_overrides_the_defaults(tmp_path: Path) -> None:
    config = tmp_path / "optimiser.toml"
    config.write_text('namespace = "from-file"\nprefetch = 50\ncool_down_s = 30\ndry_run = true\n')

    settings = load_settings(
        {"OPTIMISER_PREFETCH": "7", "OPTIMISER_MAX_HOT_SWAP_PER_CYCLE": "0", "HOME": "/x"}, config
    )

    assert settings.namespace == "from-file"
    assert settings.prefetch == 7
    assert settings.optimiser.cool_down_s == 30.0
    assert settings.optimiser.dry_run is True
    assert settings.optimiser.max_hot_swap_per_cycle == 0


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OPTIMISER_PREFETCH": "many"}, "OPTIMISER_PREFETCH: 'many' is not a whole number"),
        ({"OPTIMISER_DRY_RUN": "maybe"}, "OPTIMISER_DRY_RUN: 'maybe' is not a boolean"),
        ({"OPTIMISER_COOL_DOWN_S": "soon"}, "OPTIMISER_COOL_DOWN_S: 'soon' is not a number"),
        ({"OPTIMISER_COOL_DOWN_S": "-1"}, "cool_down_s must be >= 0"),
        ({"OPTIMISER_PREFETCH": "0"}, "prefetch must be between 1 and 65535"),
        ({"OPTIMISER_NAMESPACE": "a b"}, "namespace 'a b' must be"),
        ({"OPTIMISER_AMQP_URL": "http://x:secret@h/"}, "amqp_url must look like"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environ)
    assert message in str(refused.value)
    assert "secret" not in str(refused.value)


def test_an_unknown_or_broken_file_is_refused(tmp_path: Path) -> None:
    typo = tmp_path / "typo.toml"
    typo.write_text("cooldown_s = 5\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({}, typo)
    broken = tmp_path / "broken.toml"
    broken.write_text("prefetch = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings({}, broken)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({}, tmp_path / "missing.toml")


def test_the_password_never_shows_in_repr_or_safe_url() -> None:
    settings = WorkerSettings(amqp_url="amqps://planner:s3cr3t@broker.example:5671/prod")
    assert "s3cr3t" not in repr(settings)
    assert settings.safe_url == "amqps://planner:***@broker.example:5671/prod"
    assert redact_url("amqp://h/") == "amqp://h/"


def test_run_help_lists_every_setting_with_its_variable_and_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for each, _ in setting_fields():
        variable = f"OPTIMISER_{each.name.upper()}"
        assert f"{each.name} = {variable} (default: " in text
    assert "guest:***@" in text


def test_run_with_a_bad_setting_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTIMISER_PREFETCH", "lots")
    assert main(["run"]) == 2
    assert capsys.readouterr().err == (
        "self-optimiser: error: OPTIMISER_PREFETCH: 'lots' is not a whole number\n"
    )


def test_every_setting_has_help() -> None:
    for each, _ in setting_fields():
        assert each.metadata.get("help"), each.name
    assert {f.name for f in dataclasses.fields(WorkerSettings)} >= {"amqp_url", "optimiser"}


# --- broker discovery (DESIGN.md's order) --------------------------------------------------


def test_discovery_prefers_the_environment_then_the_local_broker_then_a_container() -> None:
    def never(_: str) -> bool:
        raise AssertionError("must not probe")

    url, source = discover_broker(
        {"OPTIMISER_TEST_AMQP_URL": "amqp://u:p@elsewhere/"}, is_reachable=never
    )
    assert (url, source) == ("amqp://u:p@elsewhere/", "OPTIMISER_TEST_AMQP_URL")

    url, source = discover_broker({}, is_reachable=lambda _: True, container=lambda: "unused")
    assert (url, source) == ("amqp://guest:guest@127.0.0.1:5672/", "local broker")

    url, source = discover_broker(
        {}, is_reachable=lambda _: False, container=lambda: "amqp://c:c@127.0.0.1:32768/"
    )
    assert (url, source) == ("amqp://c:c@127.0.0.1:32768/", "testcontainers")

    url, why = discover_broker({}, is_reachable=lambda _: False, container=lambda: None)
    assert url is None
    assert "Docker is not available" in why


def test_without_a_broker_ci_fails_and_a_laptop_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "tests.support.broker.discover_broker", lambda environ: (None, "no RabbitMQ anywhere")
    )
    with pytest.raises(pytest.fail.Exception, match="CI needs a RabbitMQ broker"):
        broker_url_or_skip({"CI": "true"})
    with pytest.raises(pytest.skip.Exception, match="no RabbitMQ anywhere"):
        broker_url_or_skip({})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://user:se/cret@127.0.0.1:5672/", "amqp://user:***@127.0.0.1:5672/"),
        ("amqp://user:pa#ss?x@host/", "amqp://user:***@host/"),
        ("amqps://a:b@c@d:5671/v", "amqps://a:***@d:5671/v"),
        ("amqp://u:p%2Fx@h/", "amqp://u:***@h/"),
        ("amqp://h/", "amqp://h/"),
    ],
)
def test_redaction_works_on_the_raw_text_whatever_the_password_holds(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_password_with_an_unescaped_slash_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as refused:
        WorkerSettings(amqp_url="amqp://user:se/cret@127.0.0.1:5672/")
    assert "cret" not in str(refused.value)
    assert "%-escaped" in str(refused.value)
