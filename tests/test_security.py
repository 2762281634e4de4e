"""Security: secrets never leave the process, Redis ACL and TLS work, nothing received is run."""

from __future__ import annotations

import os
import pathlib
import pickle
import re
import time

import pytest
import redis
from servers import RedisServer, free_port

import flask_tickstock_monitor
from flask_tickstock_monitor.events import InvalidMessage, parse
from flask_tickstock_monitor.scrub import Scrubber

CHANNEL = "tickstock:errors"
SCRUBBED = "[scrubbed]"

#: Keys a context may carry that must never be published, in the spellings apps use.
SECRET_KEYS = [
    "password",
    "Password",
    "PASSWORD",
    "user_password",
    "db-password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "client_secret",
    "clientSecret",
    "AWS_SECRET_ACCESS_KEY",
    "token",
    "access_token",
    "refresh_token",
    "refreshToken",
    "X-Auth-Token",
    "id_token",
    "jwt",
    "api_key",
    "API-KEY",
    "apiKey",
    "ApiKey",
    "api key",
    "x-api-key",
    "access_key",
    "AccessKeyId",
    "authorization",
    "Proxy-Authorization",
    "auth",
    "authToken",
    "cookie",
    "Set-Cookie",
    "sessionid",
    "session_id",
    "SESSION",
    "csrftoken",
    "X-CSRF-Token",
    "xsrf-token",
    "private_key",
    "privateKey",
    "private-key",
    "credit_card_number",
    "creditCard",
    "card_number",
    "cardNumber",
    "cc-number",
    "ccnum",
    "cc_num",
    "cvv",
    "CVC",
    "ssn",
    "social_security_number",
    "sentry_dsn",
]
#: Ordinary keys of TickStockAppV2's error contexts: they must stay readable.
PLAIN_KEYS = [
    "universe_key",
    "symbol_count",
    "symbol",
    "cache_type",
    "endpoint",
    "method",
    "path",
    "error_detail",
    "component",
    "keys",
    "status",
    "user",
    "line",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_default_scrubbing_of_secret_keys(key):
    scrubber = Scrubber()
    assert scrubber({key: "s3cr3t", "nested": [{key: "s3cr3t"}]}) == {
        key: SCRUBBED,
        "nested": [{key: SCRUBBED}],
    }


def test_ordinary_keys_are_kept():
    context = {key: "nasdaq100" for key in PLAIN_KEYS}
    assert Scrubber()(context) == context


def test_configured_scrub_keys_add_to_the_defaults():
    scrubber = Scrubber(keys=["account_no"])
    assert scrubber({"Account-No": 1, "password": 2, "symbol": 3}) == {
        "Account-No": SCRUBBED,
        "password": SCRUBBED,
        "symbol": 3,
    }


def test_sensitive_headers_are_scrubbed(redis_server, make_app, record_channels):
    app, monitor = make_app(redis_server.url, TICKSTOCK_MONITOR_INCLUDE_HEADERS=True)
    recorder = record_channels(redis_server.client(), CHANNEL)

    @app.route("/fail")
    def fail():
        raise RuntimeError("with headers")

    secrets = {
        "Authorization": "Bearer s3cr3t-1",
        "Cookie": "session=s3cr3t-2",
        "Set-Cookie": "s3cr3t-3",
        "X-Api-Key": "s3cr3t-4",
        "Proxy-Authorization": "Basic s3cr3t-5",
        "X-Auth-Token": "s3cr3t-6",
        "X-CSRF-Token": "s3cr3t-7",
    }
    client = app.test_client(use_cookies=False)  # else the client's cookie jar sets Cookie
    response = client.get("/fail", headers={**secrets, "X-Request-Id": "r-1"})
    assert response.status_code == 500
    assert monitor.flush(2.0, app=app)
    (event,) = recorder.wait_count(CHANNEL, 1)
    headers = {name.lower(): value for name, value in event["context"]["headers"].items()}
    assert {name: headers[name.lower()] for name in secrets} == dict.fromkeys(secrets, SCRUBBED)
    assert headers["x-request-id"] == "r-1"
    raw = recorder.raw[0][1]
    for value in secrets.values():
        assert value.encode() not in raw


def test_headers_are_not_published_by_default(redis_server, make_app, record_channels):
    app, monitor = make_app(redis_server.url)
    recorder = record_channels(redis_server.client(), CHANNEL)

    @app.route("/fail")
    def fail():
        raise RuntimeError("no headers")

    app.test_client().get("/fail", headers={"Authorization": "Bearer abc"})
    assert monitor.flush(2.0, app=app)
    (event,) = recorder.wait_count(CHANNEL, 1)
    assert "headers" not in event["context"]
    assert b"Bearer" not in recorder.raw[0][1]


# --- Redis ACL ---------------------------------------------------------------------------------


@pytest.fixture
def acl_server(redis_server):
    admin = redis_server.client()
    admin.execute_command(
        "ACL",
        "SETUSER",
        "monitor",
        "on",
        ">secret",
        "~tickstock:*",
        "&tickstock:*",
        "+publish",
        "+subscribe",
        "+unsubscribe",
        "+ping",
    )
    admin.execute_command("ACL", "SETUSER", "default", "off")  # no anonymous access
    return redis_server


def test_acl_user_with_password_publishes(acl_server, make_app, record_channels):
    port = acl_server.port
    url = f"redis://monitor:secret@127.0.0.1:{port}/0"
    app, monitor = make_app(url)
    recorder = record_channels(redis.Redis.from_url(url), CHANNEL)
    with app.app_context():
        monitor.publish_error("published as an ACL user")
    assert monitor.flush(2.0, app=app)
    (event,) = recorder.wait_count(CHANNEL, 1)
    assert event["message"] == "published as an ACL user"
    stats = monitor.stats(app)
    assert stats["published"] == 1 and stats["connected"] is True
    # the user may publish nowhere else, so the ACL does confine it
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis.from_url(url).publish("other", "x")


def test_acl_wrong_password_counts_the_loss_and_the_app_carries_on(acl_server, make_app):
    url = f"redis://monitor:wrong@127.0.0.1:{acl_server.port}/0"
    app, monitor = make_app(url, TICKSTOCK_MONITOR_THROTTLE_LIMIT=0)

    @app.route("/fail")
    def fail():
        raise RuntimeError("boom")

    @app.route("/ok")
    def ok():
        return "fine"

    client = app.test_client()
    assert [client.get("/fail").status_code for _ in range(5)] == [500] * 5
    assert client.get("/ok").data == b"fine"
    monitor.flush(1.0, app=app)
    stats = monitor.stats(app)
    assert stats["connected"] is False
    assert stats["published"] == 0
    assert "AuthenticationError" in stats["last_error"] or "invalid" in stats["last_error"]
    assert stats["dropped"].get("publish_failed", 0) + stats["queued"] == 5


# --- TLS ---------------------------------------------------------------------------------------


class TLSRedisServer(RedisServer):
    """A redis-server that listens on TLS only, with certificates from ``trustme``."""

    def __init__(self, certs: pathlib.Path):
        self.certs = certs
        super().__init__(
            args=[
                "--port",
                "0",
                "--tls-port",
                "0",  # the TLS port is set in command()
                "--tls-cert-file",
                str(certs / "server.pem"),
                "--tls-key-file",
                str(certs / "key.pem"),
                "--tls-ca-cert-file",
                str(certs / "ca.pem"),
                "--tls-auth-clients",
                "no",
            ]
        )

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--tls-port") + 1] = str(self.port)
        return cmd

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.certs / 'ca.pem'}"

    def client(self, **kwargs) -> redis.Redis:
        kwargs.setdefault("socket_timeout", 2)
        return redis.Redis.from_url(self.url, **kwargs)


@pytest.fixture
def tls_server(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server = TLSRedisServer(tmp_path).start()
    yield server
    server.stop()


def test_errors_published_and_received_over_tls(tls_server, make_app, record_channels):
    app, monitor = make_app(tls_server.url)
    recorder = record_channels(tls_server.client(), CHANNEL)
    with app.app_context():
        monitor.publish_error("over TLS", context={"password": "p"})
    assert monitor.flush(2.0, app=app)
    (event,) = recorder.wait_count(CHANNEL, 1)
    assert (event["message"], event["context"]) == ("over TLS", {"password": SCRUBBED})
    assert monitor.stats(app)["connected"] is True
    # and the port speaks nothing but TLS: a plain client is refused
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis(port=tls_server.port, socket_timeout=1).ping()


def test_tls_with_an_unknown_ca_is_not_connected(tls_server, make_app, tmp_path):
    trustme = pytest.importorskip("trustme")
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    app, monitor = make_app(f"rediss://127.0.0.1:{tls_server.port}/0?ssl_ca_certs={other}")
    with app.app_context():
        monitor.publish_error("never sent")
    deadline = time.monotonic() + 5
    while not monitor.stats(app)["last_error"] and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = monitor.stats(app)
    assert stats["published"] == 0 and stats["connected"] is False
    assert "certificate verify failed" in stats["last_error"].lower()


# --- nothing received is unpickled or evaluated ------------------------------------------------


class Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/tickstock-pwned",))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_pickle_payloads_are_rejected(protocol):
    with pytest.raises(InvalidMessage) as info:
        parse(pickle.dumps(Boom(), protocol=protocol), 1 << 20)
    assert info.value.reason in ("bad_json", "not_utf8")


def test_code_in_a_message_is_inert_text():
    code = "__import__('os').system('touch /tmp/tickstock-pwned')"
    assert parse(f'{{"message": "{code}"}}'.encode(), 1024) == {"message": code}
    with pytest.raises(InvalidMessage) as info:
        parse(code.encode(), 1024)
    assert info.value.reason == "bad_json"


def test_the_package_never_unpickles_or_evaluates():
    package = pathlib.Path(flask_tickstock_monitor.__file__).parent
    forbidden = re.compile(
        r"\b(pickle|marshal|shelve|dill|jsonpickle)\b|(?<![\w.])(eval|exec|compile)\s*\(|yaml\.load\("
    )
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if forbidden.search(line) and not line.lstrip().startswith("#")
    ]
    assert found == []


def test_no_secret_in_the_url_is_published(make_app):
    # a wrong port so nothing connects: last_error and stats must not show the password
    url = f"redis://monitor:hunter2@127.0.0.1:{free_port()}/0"
    app, monitor = make_app(url)
    with app.app_context():
        monitor.publish_error("x")
    monitor.flush(0.5, app=app)
    assert "hunter2" not in repr(monitor.stats(app))
