"""Fingerprints of real raises: the same error in every process and release, others apart."""

from __future__ import annotations

import functools
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_tickstock_monitor import fingerprint, tracebacks
from flask_tickstock_monitor.fingerprint import (
    _frames,
    custom_fingerprint,
    event_fingerprint,
    exception_fingerprint,
    fingerprint_parts,
    message_fingerprint,
    normalise_message,
)

HEX16 = re.compile(r"[0-9a-f]{16}")


def caught(func: Callable[..., Any], *args: Any) -> tracebacks.ExceptionData:
    """What the capture hands the publisher for the exception ``func(*args)`` raises."""
    try:
        func(*args)
    except Exception as exc:
        return tracebacks.extract_exception(exc)
    raise AssertionError("did not raise")


def fp(func: Callable[..., Any], *args: Any) -> str:
    return exception_fingerprint(caught(func, *args))


# --- an app in two releases, raised in two processes -------------------------------------------

SHOP = {
    "shop/__init__.py": "",
    "shop/pricing.py": """
        class PricingError(Exception):
            pass

        def total(items, divisor):
            return sum(items) / divisor

        def checked_total(items, divisor):
            try:
                return total(items, divisor)
            except ZeroDivisionError as exc:
                raise PricingError("no divisor") from exc
        """,
    "shop/views.py": """
        import fakelib
        from shop import pricing

        def checkout(divisor):
            return pricing.total([1, 2], divisor)

        def refund(divisor):
            return pricing.total([1, 2], divisor)

        def lookup(key):
            return {"a": 1}[key]

        def checkout_checked(divisor):
            return pricing.checked_total([1, 2], divisor)

        def through_library(path):
            return fakelib.fail_a() if path == "a" else fakelib.fail_b()
        """,
    "site-packages/fakelib/__init__.py": """
        def fail_a():
            return _fail("a")

        def fail_b():
            return _fail("b")

        def _fail(what):
            raise ValueError(what)
        """,
}

RUNNER = """
import json, sys
from flask_tickstock_monitor import fingerprint, tracebacks
from flask_tickstock_monitor.fingerprint import exception_fingerprint
from shop import views

def fp(func, *args):
    try:
        func(*args)
    except Exception as exc:
        return exception_fingerprint(tracebacks.extract_exception(exc))

print(json.dumps({
    "checkout": fp(views.checkout, 0),
    "refund": fp(views.refund, 0),
    "lookup": fp(views.lookup, "b"),
    "chained": fp(views.checkout_checked, 0),
    "library_a": fp(views.through_library, "a"),
    "library_b": fp(views.through_library, "b"),
}))
"""


def write_release(root: Path, shift: int) -> Path:
    """A copy of the app at ``root``, every file's code ``shift`` lines further down."""
    for name, source in SHOP.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# release copy\n" * shift + textwrap.dedent(source))
    return root


def fingerprints_in_subprocess(release: Path, hash_seed: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONHASHSEED": hash_seed,
        "PYTHONPATH": os.pathsep.join([str(release), str(release / "site-packages")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        env=env,
        cwd=release,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_the_same_error_in_two_releases_and_processes_has_one_fingerprint(tmp_path: Path) -> None:
    v1 = fingerprints_in_subprocess(write_release(tmp_path / "srv" / "v1", shift=0), "1")
    v2 = fingerprints_in_subprocess(write_release(tmp_path / "srv" / "v2", shift=7), "2")
    assert v1 == v2  # other paths, other line numbers, another hash seed
    assert all(HEX16.fullmatch(value) for value in v1.values())
    # the library's frames (fail_a or fail_b) are not the app's: one group
    assert v1["library_a"] == v1["library_b"]
    # another function, another type, a chained cause: each its own group
    distinct = [v1[k] for k in ("checkout", "refund", "lookup", "chained", "library_a")]
    assert len(set(distinct)) == len(distinct)


# --- in this process -----------------------------------------------------------------------------


def compiled(source: str, filename: str, first_line: int = 1) -> dict[str, Any]:
    """The functions of ``source`` as if its file began ``first_line - 1`` lines higher."""
    namespace: dict[str, Any] = {"__name__": "shifted"}
    code = compile("\n" * (first_line - 1) + textwrap.dedent(source), filename, "exec")
    exec(code, namespace)
    return namespace


SHIFTED = """
    def parse(raw):
        return int(raw)

    def load(raw):
        return parse(raw)
    """


def test_line_numbers_do_not_change_it(tmp_path: Path) -> None:
    filename = str(tmp_path / "shifted.py")
    early = compiled(SHIFTED, filename)
    late = compiled(SHIFTED, filename, first_line=40)
    assert early["load"].__code__ is not late["load"].__code__
    assert fp(early["load"], "x") == fp(late["load"], "x")


def outer(kind: type[Exception]) -> None:
    inner(kind)


def inner(kind: type[Exception]) -> None:
    raise kind("boom")


def other_outer(kind: type[Exception]) -> None:
    inner(kind)


def test_other_functions_and_types_are_other_groups() -> None:
    assert fp(outer, ValueError) == fp(outer, ValueError)
    assert fp(outer, ValueError) != fp(other_outer, ValueError)
    assert fp(outer, ValueError) != fp(outer, KeyError)
    assert fp(inner, ValueError) != fp(outer, ValueError)


def test_the_message_of_a_raised_exception_does_not_change_it() -> None:
    def fail(value: int) -> None:
        raise ValueError(f"bad value {value} for {'x' * value}")

    assert fp(fail, 1) == fp(fail, 2)


def wrap(cause: bool) -> None:
    try:
        inner(ValueError)
    except ValueError as exc:
        if cause:
            raise RuntimeError("wrapped") from exc
        raise RuntimeError("wrapped") from None


def test_a_chained_cause_changes_it() -> None:
    with_cause, without = caught(wrap, True), caught(wrap, False)
    assert len(with_cause) == 2 and len(without) == 1
    assert exception_fingerprint(with_cause) != exception_fingerprint(without)

    # the cause's own frames count too: a cause raised elsewhere is another group
    def wrap_other() -> None:
        try:
            other_outer(ValueError)
        except ValueError as exc:
            raise RuntimeError("wrapped") from exc

    assert fp(wrap_other) != exception_fingerprint(with_cause)


def test_implicit_context_counts_as_a_chain() -> None:
    def during_handling() -> None:
        try:
            inner(KeyError)
        except KeyError:
            inner(ValueError)

    def alone() -> None:
        inner(ValueError)

    assert len(caught(during_handling)) == 2
    assert fp(during_handling) != fp(alone)


def test_site_packages_frames_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = write_release(tmp_path, shift=0) / "site-packages"
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "fakelib", raising=False)
    import fakelib

    def through(func: Callable[[], Any]) -> None:
        func()

    assert fp(through, fakelib.fail_a) == fp(through, fakelib.fail_b)
    assert fp(through, fakelib.fail_a) != fp(outer, ValueError)
    labels = [_frames.label(code) for code in caught(through, fakelib.fail_a)[0][2][::2]]
    assert [label for label, is_app in labels if not is_app] == [
        "fakelib:fail_a",
        "fakelib:_fail",
    ]


def test_without_an_app_frame_the_innermost_frames_name_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the whole traceback is the library's: caught and extracted inside it
    site = tmp_path / "lib" / "site-packages"
    (site / "worker").mkdir(parents=True)
    (site / "worker" / "__init__.py").write_text(
        textwrap.dedent(
            """
            from flask_tickstock_monitor import fingerprint, tracebacks

            def run(job):
                try:
                    job()
                except Exception as exc:
                    return tracebacks.extract_exception(exc)

            def job_a():
                raise OSError("gone")

            def job_b():
                raise OSError("gone")
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "worker", raising=False)
    import worker

    a, b = worker.run(worker.job_a), worker.run(worker.job_b)
    assert exception_fingerprint(a) != exception_fingerprint(b)
    assert exception_fingerprint(a) == exception_fingerprint(worker.run(worker.job_a))


def test_standard_library_frames_are_ignored() -> None:
    def decode(text: str, through_file: bool) -> Any:
        # json.load goes through frames json.loads does not
        return json.load(io.StringIO(text)) if through_file else json.loads(text)

    assert fp(decode, "{", True) == fp(decode, "[", False)
    codes = caught(decode, "{", True)[0][2][::2]
    assert [_frames.label(c)[1] for c in codes].count(True) == 2  # caught() and decode()


def view() -> str:
    return helper()


def helper() -> str:
    raise LookupError("no such symbol")


def test_flask_and_werkzeug_frames_are_ignored() -> None:
    app = Flask(__name__)
    app.testing = True  # the test client re-raises what the view raised
    app.add_url_rule("/", view_func=view)
    with app.test_client() as client:
        through_flask = caught(functools.partial(client.get, "/"))
    direct = caught(view)
    assert len(through_flask[0][2]) > len(direct[0][2]) + 10  # werkzeug's and flask's frames
    assert exception_fingerprint(through_flask) == exception_fingerprint(direct)
    assert not _frames.label(Flask.wsgi_app.__code__)[1]
    assert not _frames.label(tracebacks.extract_exception.__code__)[1]  # our own package


def test_recursion_depth_does_not_change_it() -> None:
    def descend(depth: int) -> None:
        if depth == 0:
            raise RecursionError("too deep")
        descend(depth - 1)

    assert fp(descend, 3) == fp(descend, 30)


def test_an_exception_never_raised_is_named_by_type_and_message() -> None:
    def data(exc: BaseException) -> str:
        return exception_fingerprint(tracebacks.extract_exception(exc))

    assert data(ValueError("order 1 rejected")) == data(ValueError("order 2 rejected"))
    assert data(ValueError("order 1 rejected")) != data(ValueError("order 1 accepted"))
    assert data(ValueError("x")) != data(KeyError("x"))


def test_the_code_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_frames, "max_entries", 8)
    for first_line in range(1, 40):
        functions = compiled(SHIFTED, "bounded.py", first_line)
        assert fp(functions["load"], "x") == fp(compiled(SHIFTED, "bounded.py")["load"], "x")
        assert len(_frames._codes) <= 8


def test_the_type_is_named_by_module_and_qualified_name() -> None:
    class Local(Exception):
        pass

    # two classes of one name in one module, defined in different places: different groups
    def make() -> type[Exception]:
        class Local(Exception):
            pass

        return Local

    def raise_it(kind: type[Exception]) -> None:
        raise kind()

    assert fp(raise_it, Local) != fp(raise_it, make())
    assert fp(raise_it, make()) == fp(raise_it, make())  # the same qualified name


# --- messages ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("User 123 failed: 'abc'", "User 456 failed: 'xyz'"),
        ('Key "price" missing', 'Key "volume" missing'),
        (
            "order 3f1c2b4a-1234-4abc-8def-0123456789ab not found",
            "order 00000000-0000-4000-8000-000000000000 not found",
        ),
        ("retry in 1.5s", "retry in 30s"),
        ("object at 0x7f3a9c2b1d40 closed", "object at 0x10c4 closed"),
        ("mail to bob@example.com bounced", "mail to a.b+c@mail.example.org bounced"),
        ("connect to 10.0.0.1:6379 failed", "connect to 192.168.1.20 failed"),
        ("connect to fe80::1 failed", "connect to 2001:db8::8a2e:370:7334 failed"),
        ("cannot open /srv/v1/data/a.csv", "cannot open /tmp/x"),
        ("cannot open C:\\data\\a.csv", "cannot open C:\\b"),
        ("GET https://api.example.com/v1/q?s=A timed out", "GET http://x/y timed out"),
        ("request req-9f8e7d6c failed", "request req-00a1b2c3 failed"),
        ("too   many\n\tspaces ", "too many spaces"),
    ],
)
def test_messages_differing_in_variable_parts_share_one(first: str, second: str) -> None:
    assert normalise_message(first) == normalise_message(second)
    assert message_fingerprint("app.orders", first) == message_fingerprint("app.orders", second)


def test_the_normalised_message() -> None:
    assert normalise_message("User 123 failed: 'abc'") == "User <n> failed: <str>"
    assert normalise_message("can't reach 10.0.0.1:5432 from /srv/app") == (
        "can't reach <ip> from <path>"
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("User 1 failed", "User 1 succeeded"),
        ("cache miss", "cache hit"),
        ("User 1 failed", "Order 1 failed"),
    ],
)
def test_messages_differing_in_words_do_not(first: str, second: str) -> None:
    assert message_fingerprint("app", first) != message_fingerprint("app", second)


def test_the_logger_is_part_of_it() -> None:
    assert message_fingerprint("app.a", "failed") != message_fingerprint("app.b", "failed")
    assert message_fingerprint(None, "failed") == message_fingerprint("", "failed")


def test_a_huge_message_is_read_from_its_start() -> None:
    head = "x " * 600
    assert message_fingerprint("app", head + "a" * 5000) == message_fingerprint("app", head + "b")


def test_fingerprints_are_stable_across_versions_of_this_code() -> None:
    # Changing these regroups every stored error: a change must be deliberate.
    assert message_fingerprint("app", "User 123 failed: 'abc'") == "d513378a66f56590"
    assert custom_fingerprint(["checkout", "db"], "0000000000000000") == "cfbd2eab4fb74870"


# --- custom fingerprints and events --------------------------------------------------------------


def test_custom_fingerprint_and_the_default_placeholder() -> None:
    default = fp(outer, ValueError)
    assert custom_fingerprint(["{{ default }}"], default) == default
    assert custom_fingerprint(["{{default}}"], default) == default
    with_db = custom_fingerprint(["{{ default }}", "db"], default)
    assert HEX16.fullmatch(with_db) and with_db != default
    assert with_db == custom_fingerprint(["{{default}}", "db"], default)
    assert with_db != custom_fingerprint(["{{ default }}", "cache"], default)
    # without the placeholder the default plays no part
    assert custom_fingerprint(["db"], default) == custom_fingerprint(["db"], "f" * 16)
    assert custom_fingerprint(["a", "b"], default) != custom_fingerprint(["ab"], default)


@pytest.mark.parametrize(
    ("value", "error", "text"),
    [
        ("db", TypeError, "list of strings"),
        (b"db", TypeError, "list of strings"),
        ([], ValueError, "must not be empty"),
        (["db", 1], TypeError, "parts must be strings, got int"),
        (None, TypeError, "got NoneType"),
    ],
)
def test_a_bad_custom_fingerprint_is_refused(value: Any, error: type, text: str) -> None:
    with pytest.raises(error, match=text):
        fingerprint_parts(value)
    with pytest.raises(error, match=text):
        custom_fingerprint(value, "0" * 16)


def test_an_event_without_a_fingerprint_gets_its_message_one() -> None:
    event = {"component": "app.orders", "message": "User 7 failed: 'x'"}
    assert event_fingerprint(event) == message_fingerprint("app.orders", "User 8 failed: 'y'")
    assert event_fingerprint({**event, "fingerprint": "abc"}) == "abc"
    for bad in (None, 17, "", "x" * 33, "a\nb"):
        assert event_fingerprint({**event, "fingerprint": bad}) == event_fingerprint(event)
    assert HEX16.fullmatch(event_fingerprint({}))


def test_sys_path_changes_are_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pkg").mkdir()
    module = tmp_path / "pkg" / "deep.py"
    module.write_text("def f():\n    pass\n")
    assert _frames._module(str(module)) == ("deep", True)  # no __init__.py: the file alone
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _frames._module(str(module)) == ("pkg.deep", True)


def test_message_fingerprints_remembered_are_the_same_and_bounded(monkeypatch):
    monkeypatch.setattr(fingerprint, "_messages", {})
    monkeypatch.setattr(fingerprint, "MAX_MESSAGES", 3)
    first = fingerprint.message_fingerprint("app.db", "timeout after 30 s on shard 7")
    assert len(fingerprint._messages) == 1
    # remembered: the same answer without normalising again, and the same as a fresh one
    monkeypatch.setattr(fingerprint, "normalise_message", lambda message: 1 / 0)
    assert fingerprint.message_fingerprint("app.db", "timeout after 30 s on shard 7") == first
    monkeypatch.undo()
    assert fingerprint.message_fingerprint("app.db", "timeout after 31 s on shard 8") == first
    # bounded: cleared when full; a long message is never kept
    monkeypatch.setattr(fingerprint, "_messages", {})
    monkeypatch.setattr(fingerprint, "MAX_MESSAGES", 3)
    for i in range(5):
        fingerprint.message_fingerprint("app", f"message {'x' * i}")
    assert 1 <= len(fingerprint._messages) <= 3
    fingerprint.message_fingerprint("app", "y" * (fingerprint.MAX_REMEMBERED_CHARS + 1))
    assert all(len(m) <= fingerprint.MAX_REMEMBERED_CHARS for _, m in fingerprint._messages)
