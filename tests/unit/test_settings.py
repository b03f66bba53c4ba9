"""Settings: typed, validated at start, and every bad value named as the operator set it."""

from __future__ import annotations

import pytest

from dmb.settings import Settings, SettingsError, load_settings


def test_defaults_follow_the_design() -> None:
    settings = load_settings(environ={})
    assert settings.fanout_batch_size == 100
    assert settings.rate_limit_user_capacity == 100
    assert settings.rate_limit_user_refill_per_sec == 10
    assert settings.rate_limit_ip_capacity == 1000
    assert settings.rate_limit_ip_refill_per_sec == 10
    assert settings.feed_max_length == 800
    assert (settings.http_port, settings.grpc_port) == (8000, 9000)
    assert settings.uses_embedded_stores


def test_environment_values_are_parsed_to_their_types() -> None:
    settings = load_settings(
        environ={
            "DMB_HTTP_PORT": "8080",
            "DMB_RATE_LIMIT_FAIL_OPEN": "false",
            "DMB_RATE_LIMIT_IP_REFILL_PER_SEC": "2.5",
            "DMB_JWT_PUBLIC_KEYS": '{"k1": "pem"}',
            "DMB_REDIS_URL": "redis://localhost:6379/0",
            "UNRELATED": "ignored",
        }
    )
    assert settings.http_port == 8080
    assert settings.rate_limit_fail_open is False
    assert settings.rate_limit_ip_refill_per_sec == 2.5
    assert settings.jwt_public_keys == {"k1": "pem"}
    assert not settings.uses_embedded_stores


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"DMB_HTTP_PORT": "eighty"}, "DMB_HTTP_PORT"),
        ({"DMB_HTTP_PORT": "70000"}, "DMB_HTTP_PORT"),
        ({"DMB_FANOUT_BATCH_SIZE": "0"}, "DMB_FANOUT_BATCH_SIZE"),
        ({"DMB_REDIS_URL": "http://localhost"}, "DMB_REDIS_URL"),
        ({"DMB_DATABASE_URL": "mysql://x"}, "DMB_DATABASE_URL"),
        ({"DMB_KAFKA_BOOTSTRAP": "localhost"}, "DMB_KAFKA_BOOTSTRAP"),
        ({"DMB_JWT_ALGORITHM": "none"}, "DMB_JWT_ALGORITHM"),
        ({"DMB_JWT_ALGORITHM": "HS256"}, "DMB_JWT_ALGORITHM"),
        ({"DMB_JWT_PUBLIC_KEYS": "{not json"}, "DMB_JWT_PUBLIC_KEYS"),
        ({"DMB_ENVIRONMENT": "staging"}, "DMB_ENVIRONMENT"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ=environ)
    assert named in str(caught.value)


def test_a_misspelled_variable_is_refused_with_a_suggestion() -> None:
    with pytest.raises(SettingsError, match="did you mean DMB_CELEBRITY_THRESHOLD"):
        load_settings(environ={"DMB_CELEBRITY_TRESHOLD": "5"})


def test_cross_field_rules() -> None:
    with pytest.raises(SettingsError, match="must differ"):
        load_settings(environ={"DMB_HTTP_PORT": "9000", "DMB_GRPC_PORT": "9000"})
    with pytest.raises(SettingsError, match="jwt_active_kid"):
        load_settings(environ={"DMB_JWT_ACTIVE_KID": "missing"})


def test_production_refuses_embedded_stores_and_missing_keys() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"DMB_ENVIRONMENT": "production"})
    for variable in ("DMB_DATABASE_URL", "DMB_REDIS_URL", "DMB_KAFKA_BOOTSTRAP"):
        assert variable in str(caught.value)


def test_secrets_do_not_show_in_repr() -> None:
    settings = load_settings(environ={"DMB_DATABASE_URL": "postgresql://u:hunter2@db/dmb"})
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)


def test_environ_round_trip_rebuilds_equal_settings() -> None:
    original = load_settings(
        environ={
            "DMB_REDIS_URL": "redis://:pw@localhost:1/0",
            "DMB_JWT_PUBLIC_KEYS": '{"a": "b"}',
            "DMB_RATE_LIMIT_FAIL_OPEN": "false",
        }
    )
    assert load_settings(environ=original.as_environ()) == original


def test_overrides_are_validated_like_the_environment() -> None:
    settings = load_settings(environ={})
    assert settings.with_overrides({"fanout_workers": 7}).fanout_workers == 7
    with pytest.raises(SettingsError, match="DMB_FANOUT_WORKERS"):
        settings.with_overrides({"fanout_workers": 0})


def test_settings_are_immutable() -> None:
    settings: Settings = load_settings(environ={})
    with pytest.raises(ValueError, match="frozen"):
        settings.http_port = 1


def test_cors_origins_are_none_by_default_and_checked() -> None:
    from serve_apps.gateway.cors import parse_origins

    assert load_settings(environ={}).cors_allowed_origins == ""
    given = load_settings(
        environ={"DMB_CORS_ALLOWED_ORIGINS": "https://app.example.com, http://localhost:3000/"}
    )
    assert parse_origins(given.cors_allowed_origins) == {
        "https://app.example.com",
        "http://localhost:3000",
    }
    assert load_settings(environ={"DMB_CORS_ALLOWED_ORIGINS": "*"}).cors_allowed_origins == "*"
    for bad in ("app.example.com", "https://app.example.com/path", "ftp://x.io"):
        with pytest.raises(SettingsError, match="DMB_CORS_ALLOWED_ORIGINS"):
            load_settings(environ={"DMB_CORS_ALLOWED_ORIGINS": bad})
