import pytest

from stream.durations import format_duration, parse_duration
from stream.settings import SettingsError, settings_from_env


def test_defaults():
    s = settings_from_env({})
    assert s.broker is None and s.web_host == "127.0.0.1" and s.web_port == 6066
    assert s.windows_seconds == (300, 900, 3600) and s.retention_seconds == 4200
    assert s.topics.inputs()[0] == "marketing.impressions" and s.max_campaigns_per_partition == 3000
    assert s.export == "lean"


def test_environment_and_overrides():
    s = settings_from_env(
        {
            "KPI_WINDOWS": "1h, 5m",
            "KPI_BUCKET": "30s",
            "KPI_TOPIC_CLICKS": "c",
            "KPI_BROKER": "kafka://k:9092",
            "KPI_WEB_PORT": "7000",
        },
        web_port=7100,
    )
    assert s.windows_seconds == (300, 3600) and s.bucket_seconds == 30
    assert s.topics.clicks == "c" and s.broker == "kafka://k:9092" and s.web_port == 7100


@pytest.mark.parametrize(
    "env, named",
    [
        ({"KPI_WEB_PORT": "http"}, "KPI_WEB_PORT"),
        ({"KPI_WEB_PORT": "70000"}, "KPI_WEB_PORT"),
        ({"KPI_WINDOWS": "5 minutes"}, "KPI_WINDOWS"),
        ({"KPI_WINDOWS": "90s"}, "KPI_WINDOWS"),  # not a whole number of 1m buckets
        ({"KPI_BUCKET": "0s"}, "KPI_BUCKET"),
        ({"KPI_CURRENCY": "usd"}, "KPI_CURRENCY"),
        ({"KPI_CURRENCY": "\uff35\uff33\uff24"}, "KPI_CURRENCY"),  # fullwidth USD
        ({"KPI_BROKER": "localhost:9092"}, "KPI_BROKER"),
        ({"KPI_MAX_CAMPAIGNS_PER_PARTITION": "0"}, "KPI_MAX_CAMPAIGNS_PER_PARTITION"),
        ({"KPI_MAX_CAMPAIGNS": "5000"}, "KPI_MAX_CAMPAIGNS: replaced"),
        ({"KPI_EXPORT": "everything"}, "KPI_EXPORT"),
        ({"KPI_GRACE": "-1m"}, "KPI_GRACE"),
        ({"KPI_MAX_COST": "0"}, "KPI_MAX_COST"),
        ({"KPI_MAX_COST": "lots"}, "KPI_MAX_COST"),
        ({"KPI_MAX_SALE_VALUE": "2e9"}, "KPI_MAX_SALE_VALUE"),
        ({"KPI_MAX_EVENTS_PER_MESSAGE": "1048577"}, "KPI_MAX_EVENTS_PER_MESSAGE"),
        ({"KPI_MAX_EVENTS_PER_MESSAGE": "0"}, "KPI_MAX_EVENTS_PER_MESSAGE"),
        ({"KPI_MAX_MESSAGE_BYTES": "100"}, "KPI_MAX_MESSAGE_BYTES"),
        ({"KPI_TIMEZONE": "Europe"}, "KPI_TIMEZONE"),  # a directory of zones, not one
        ({"KPI_TIMEZONE": "Etc"}, "KPI_TIMEZONE"),
        ({"KPI_TIMEZONE": "Europe/" + "x" * 293}, "KPI_TIMEZONE"),  # 300 characters
        ({"KPI_TIMEZONE": "../etc/passwd"}, "KPI_TIMEZONE"),
        ({"KPI_TIMEZONE": "localtime"}, "KPI_TIMEZONE"),  # a different zone on each machine
        ({"KPI_TIMEZONE": "Asia/Kolkata"}, "KPI_TIMEZONE: .*KPI_LONG_BUCKET"),
    ],
)
def test_bad_settings_fail_fast_naming_the_setting(env, named):
    with pytest.raises(SettingsError, match=named):
        settings_from_env(env)


@pytest.mark.parametrize(
    "text, seconds, label",
    [("90s", 90, "90s"), ("5m", 300, "5m"), ("1h", 3600, "1h"), ("2d", 172800, "2d")],
)
def test_durations(text, seconds, label):
    assert parse_duration(text) == seconds and format_duration(seconds) == label


def test_sasl_needs_credentials_and_builds_client_options():
    from agents.kafka_auth import aiokafka_kwargs, faust_credentials

    with pytest.raises(SettingsError, match="KPI_SASL_USERNAME"):
        settings_from_env({"KPI_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(SettingsError, match="KPI_SECURITY_PROTOCOL"):
        settings_from_env({"KPI_SECURITY_PROTOCOL": "TLS"})
    s = settings_from_env(
        {
            "KPI_SECURITY_PROTOCOL": "SASL_SSL",
            "KPI_SASL_MECHANISM": "SCRAM-SHA-512",
            "KPI_SASL_USERNAME": "kpi",
            "KPI_SASL_PASSWORD": "secret",
        }
    )
    kwargs = aiokafka_kwargs(s)
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "kpi" and kwargs["ssl_context"] is not None
    assert faust_credentials(s).mechanism.value == "SCRAM-SHA-512"
    assert faust_credentials(settings_from_env({})) is None


@pytest.mark.parametrize(
    "zone, long_bucket, fits",
    [
        ("Asia/Kolkata", "1h", False),
        ("Asia/Kolkata", "30m", True),
        ("Asia/Kathmandu", "30m", False),
        ("Asia/Kathmandu", "15m", True),
        ("Australia/Lord_Howe", "1h", False),
        ("Australia/Lord_Howe", "30m", True),
        ("America/St_Johns", "1h", False),
        ("Europe/Berlin", "1h", True),
        ("Europe/Berlin", "2h", False),
        ("UTC", "1d", True),
    ],
)
def test_the_timezone_must_fit_the_long_bucket(zone, long_bucket, fits):
    env = {"KPI_TIMEZONE": zone, "KPI_LONG_BUCKET": long_bucket}
    if fits:
        assert settings_from_env(env).timezone == zone
        return
    with pytest.raises(SettingsError) as raised:
        settings_from_env(env)
    message = str(raised.value)
    assert message.startswith(f"KPI_TIMEZONE: timezone {zone} is UTC")
    assert f"KPI_LONG_BUCKET buckets ({long_bucket})" in message
    assert "run the workers with KPI_LONG_BUCKET=" in message


def test_the_timezone_error_names_the_bucket_that_fits():
    with pytest.raises(SettingsError, match=r"KPI_LONG_BUCKET=30m \(or 15m\)$"):
        settings_from_env({"KPI_TIMEZONE": "Asia/Kolkata"})
    with pytest.raises(SettingsError, match=r"KPI_LONG_BUCKET=15m$"):
        settings_from_env({"KPI_TIMEZONE": "Asia/Kathmandu", "KPI_LONG_BUCKET": "30m"})
