"""Settings: validated once, immutable, and the same from keywords, environment and Config."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from starlette.config import Config

from stream_mw import ConfigurationError, Settings


def test_defaults_are_valid_and_documented_routes_derive_from_the_prefix() -> None:
    settings = Settings()
    assert settings.responses_path == "/v1/responses"
    assert Settings(path_prefix="/api").responses_path == "/api/responses"


def test_by_default_every_accepted_request_can_be_stored_with_room_to_grow() -> None:
    """Issue 11.9: the 16 MiB default was under the 32 MiB request limit, so a request the
    server accepted could produce a response it silently did not store."""
    settings = Settings()
    assert settings.store_max_response_bytes >= 2 * settings.max_request_bytes
    assert settings.store_max_response_bytes <= settings.store_max_bytes


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().done_marker = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"max_event_bytes": 0}, "max_event_bytes"),
        ({"max_request_bytes": -1}, "max_request_bytes"),
        ({"max_argument_bytes": "big"}, "max_argument_bytes"),
        ({"keepalive_interval": -1.0}, "keepalive_interval"),
        ({"done_marker": "yes"}, "done_marker"),
        ({"reasoning_events": "verbose"}, "reasoning_events"),
        ({"path_prefix": "v1"}, "path_prefix"),
        ({"path_prefix": "/v1/"}, "path_prefix"),
        ({"chat_completions_path": "chat"}, "chat_completions_path"),
        ({"store_url": "postgres://db"}, "store_url"),
        ({"store_ttl": 0}, "store_ttl"),
        ({"tenant": "not callable"}, "tenant"),
        ({"on_response": 3}, "on_response"),
    ],
)
def test_invalid_values_raise_an_error_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigurationError, match=field):
        Settings(**changes)  # type: ignore[arg-type]


def test_configuration_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError, match="max_event_bytes"):
        Settings(max_event_bytes=0)


def test_from_env_parses_every_kind_of_field() -> None:
    settings = Settings.from_env(
        {
            "STREAM_MW_DONE_MARKER": "off",
            "STREAM_MW_MAX_EVENT_BYTES": "1_048_576",
            "STREAM_MW_KEEPALIVE_INTERVAL": "2.5",
            "STREAM_MW_REASONING_EVENTS": "summary",
            "STREAM_MW_STORE_URL": "none",
            "STREAM_MW_PATH_PREFIX": "/api",
            "UNRELATED": "ignored",
        }
    )
    assert settings.done_marker is False
    assert settings.max_event_bytes == 1_048_576
    assert settings.keepalive_interval == 2.5
    assert settings.reasoning_events == "summary"
    assert settings.store_url is None
    assert settings.path_prefix == "/api"


def test_from_env_keywords_override_the_environment() -> None:
    settings = Settings.from_env({"STREAM_MW_THINK_TAGS": "true"}, think_tags=False)
    assert settings.think_tags is False


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("STREAM_MW_DONE_MARKER", "maybe", "boolean"),
        ("STREAM_MW_MAX_EVENT_BYTES", "lots", "integer"),
        ("STREAM_MW_KEEPALIVE_INTERVAL", "soon", "number"),
        ("STREAM_MW_HOSTED_TOOLS", "ignore", "'drop', 'reject'"),
    ],
)
def test_from_env_errors_name_the_variable_and_the_expected_type(
    name: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigurationError, match=name) as info:
        Settings.from_env({name: value})
    assert expected in str(info.value)


def test_from_config_reads_a_starlette_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env_file = tmp_path / ".env"
    env_file.write_text(
        "STREAM_MW_DEVELOPER_ROLE=developer\nSTREAM_MW_MAX_TOKENS_PARAM=max_completion_tokens\n"
    )
    settings = Settings.from_config(Config(env_file, environ={}))
    assert settings.developer_role == "developer"
    assert settings.max_tokens_param == "max_completion_tokens"


def test_replace_validates_the_new_values() -> None:
    assert Settings().replace(done_marker=False).done_marker is False
    with pytest.raises(ConfigurationError, match="max_event_bytes"):
        Settings().replace(max_event_bytes=0)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("field", ["keepalive_interval", "store_ttl"])
def test_nan_and_infinities_are_refused_in_numeric_settings(value: float, field: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{field} must be a finite number"):
        Settings(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-Infinity"])
def test_nan_and_infinities_are_refused_in_the_environment(text: str) -> None:
    with pytest.raises(ConfigurationError, match="STREAM_MW_STORE_TTL must be a finite number"):
        Settings.from_env({"STREAM_MW_STORE_TTL": text})


def test_an_unknown_variable_is_a_warning_naming_the_nearest_real_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="stream_mw"):
        Settings.from_env(
            {
                "STREAM_MW_DONE_MARKR": "false",
                "STREAM_MW_ZZZ": "1",
                "STREAM_MW_UPSTREAM": "http://h/v1",  # the gateway's own: known
                "OTHER_DONE_MARKR": "x",  # not ours
            }
        )
    assert [r.getMessage() for r in caplog.records] == [
        "unknown environment variable STREAM_MW_DONE_MARKR is ignored; "
        "did you mean STREAM_MW_DONE_MARKER?",
        "unknown environment variable STREAM_MW_ZZZ is ignored",
    ]
