"""Fingerprints: which error events are the same error, so that they can be grouped.

An operator's first questions about an error are "is this new since the deploy?" and "how
often?": both need events of one error to share a key, in every process and every release.
So a fingerprint never uses ``hash()`` (salted per process), line numbers (they move with
every edit) or absolute paths (each release is deployed to a directory of its own). It is the
exception's type plus the app's own frames, named by module and qualified function; or, for a
message without a traceback, the logger and the message with its variable parts (numbers,
ids, quoted values, paths…) replaced by placeholders.

:func:`exception_fingerprint` runs on the publisher thread once per exception chain (see
chains.py): what can be known of a code object (is it the app's, what is its name) is worked
out once per code object.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import sys
import sysconfig
import types
from collections.abc import Mapping, Sequence
from typing import Any

from .tracebacks import ExceptionData

#: Packages whose frames are never the app's, wherever they are installed (an editable install
#: of a framework is not under site-packages).
NOT_APP_PACKAGES = frozenset({"flask", "werkzeug", "flask_tickstock_monitor"})
#: How many of the innermost frames name an exception none of whose frames is the app's.
FALLBACK_FRAMES = 3
#: A message is normalised from its first this many characters (bounds the cost of a huge one).
MAX_MESSAGE_CHARS = 1024
#: ``"{{ default }}"`` in a custom fingerprint stands for the fingerprint computed by default.
DEFAULT_PART = re.compile(r"\{\{\s*default\s*\}\}")
_LIBRARY_DIRS = ("site-packages", "dist-packages")


def _digest(text: str) -> str:
    """16 lowercase hex characters of ``text``, the same in every process and Python run."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def is_fingerprint(value: Any) -> bool:
    """Whether ``value`` can be used as a group's key as it is (it fits error_groups' column)."""
    return type(value) is str and 0 < len(value) <= 32 and value.isprintable()


# --- exceptions ----------------------------------------------------------------------------------


class _Frames:
    """What each code object's frame contributes: ``(label, is_app)``, worked out once.

    Keyed by ``id(code)``, the entry holding the code object itself: a code object's own hash
    walks its constants and bytecode on every call, and holding it means its id cannot be
    reused by another while the entry exists. Bounded: cleared when full.
    """

    def __init__(self, max_entries: int = 8192):
        self.max_entries = max_entries
        self._codes: dict[int, tuple[types.CodeType, str, bool]] = {}
        self._modules: dict[str, tuple[str, bool]] = {}
        self._path: list[str] = []
        self._roots: list[str] = []
        self._stdlib: tuple[str, ...] = ()
        self._not_app_dirs: tuple[str, ...] = ()

    def label(self, code: types.CodeType) -> tuple[str, bool]:
        entry = self._codes.get(id(code))
        if entry is not None and entry[0] is code:
            return entry[1], entry[2]
        module, is_app = self._module(code.co_filename)
        label = f"{module}:{getattr(code, 'co_qualname', code.co_name)}"
        if len(self._codes) >= self.max_entries:
            self._codes.clear()
        self._codes[id(code)] = (code, label, is_app)
        return label, is_app

    def _module(self, filename: str) -> tuple[str, bool]:
        """The dotted module name of a file and whether it is the app's code."""
        if self._path != sys.path:  # only for a code object not seen before: cheap enough
            self._refresh()
        known = self._modules.get(filename)
        if known is not None:
            return known
        if filename.startswith("<"):  # <frozen …>, <string>, <stdin>: no file to name it by
            known = (filename, False)
        else:
            path = os.path.normpath(os.path.abspath(filename))
            module = _library_module(path)
            if module is not None:
                is_app = False
            else:
                module = self._module_from_path(path)
                is_app = not path.startswith(self._stdlib) and not path.startswith(
                    self._not_app_dirs
                )
            is_app = is_app and module.partition(".")[0] not in NOT_APP_PACKAGES
            known = (module, is_app)
        if len(self._modules) >= self.max_entries:
            self._modules.clear()
        self._modules[filename] = known
        return known

    def _module_from_path(self, path: str) -> str:
        """Relative to the longest ``sys.path`` entry holding it: the name it was imported by,
        the same for ``/srv/v1/app/x.py`` and ``/srv/v2/app/x.py``."""
        for root in self._roots:
            if path.startswith(root):
                return _dotted(path[len(root) :])
        # Not under sys.path (an editable install's path hook, a file run by path): the
        # packages around it, as far up as there are ``__init__.py`` files.
        directory, name = os.path.split(path)
        parts = [name]
        while os.path.exists(os.path.join(directory, "__init__.py")):
            directory, package = os.path.split(directory)
            parts.insert(0, package)
        return _dotted(os.sep.join(parts))

    def _refresh(self) -> None:
        self._path = list(sys.path)
        roots = {os.path.normpath(os.path.abspath(entry or os.curdir)) for entry in sys.path}
        self._roots = sorted((r.rstrip(os.sep) + os.sep for r in roots), key=len, reverse=True)
        stdlib = set()
        for key in ("stdlib", "platstdlib"):
            found = sysconfig.get_paths().get(key)
            if found:
                stdlib |= {os.path.normpath(found) + os.sep, os.path.realpath(found) + os.sep}
        self._stdlib = tuple(stdlib)
        not_app = []
        for name in NOT_APP_PACKAGES:
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                spec = None
            for location in (spec and spec.submodule_search_locations) or ():
                not_app.append(os.path.normpath(location) + os.sep)
        self._not_app_dirs = tuple(not_app)
        self._modules.clear()  # names depend on sys.path; labels already made stay as they are


def _library_module(path: str) -> str | None:
    """The module name of a file under site-packages or dist-packages, else ``None``."""
    for marker in _LIBRARY_DIRS:
        at = path.rfind(os.sep + marker + os.sep)
        if at >= 0:
            return _dotted(path[at + len(marker) + 2 :])
    return None


def _dotted(relative: str) -> str:
    stem = relative
    for suffix in (".py", ".pyc", ".pyw"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    parts = [part for part in stem.split(os.sep) if part]
    if len(parts) > 1 and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


_frames = _Frames()
_type_names: dict[int, tuple[type, str]] = {}


def _type_name(kind: type) -> str:
    entry = _type_names.get(id(kind))
    if entry is not None and entry[0] is kind:
        return entry[1]
    name = f"{kind.__module__}.{kind.__qualname__}"
    if len(_type_names) >= 4096:
        _type_names.clear()
    _type_names[id(kind)] = (kind, name)
    return name


def exception_fingerprint(exc_data: ExceptionData) -> str:
    """The fingerprint of an exception chain (see :func:`.tracebacks.extract_exception`).

    Per exception, oldest first: its qualified type and the module:function of each of the
    app's frames (a run of the same frame, as in recursion, once). When an exception has no
    frame of the app's, its innermost :data:`FALLBACK_FRAMES` frames stand in; when it has no
    frame at all (made, never raised), its normalised message does. Made once per chain: the
    publisher asks the chain memo (chains.py), which asks here when it meets a new chain.
    """
    label = _frames.label
    parts = ["exc"]
    for kind, message, frames, _note in exc_data:
        parts.append(_type_name(kind))
        codes = frames[::2]
        if not codes:
            parts.append(normalise_message(message))
            continue
        last = None
        found = False
        for code in codes:
            text, is_app = label(code)
            if is_app and text != last:
                parts.append(text)
                last = text
                found = True
        if not found:
            parts.extend(_collapsed(label(code)[0] for code in codes[-FALLBACK_FRAMES:]))
    return _digest("\n".join(parts))


def _collapsed(labels: Any) -> list[str]:
    out: list[str] = []
    for text in labels:
        if not out or out[-1] != text:
            out.append(text)
    return out


# --- messages ------------------------------------------------------------------------------------

# Quoted values first (they may hold spaces), then each token that holds a digit or a path or
# address character, in one pass: the first alternative that matches at a position wins, so
# identifiers with digits go before the digits in them. Tokens of plain words (most of a
# message) are not looked at: a regular expression tried at every position of the whole
# message cost ~10x more.
_QUOTED = re.compile(r"(?<!\w)'(?:[^'\\\n]|\\.){0,512}'" r'|(?<!\w)"(?:[^"\\\n]|\\.){0,512}"')
_NEEDS_WORK = re.compile(r"[0-9@/\\]")
_VARIABLE = re.compile(
    r"""
    (?P<uuid>\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b)
    |(?P<email>\b[\w.%+-]+@[\w-]+(?:\.[\w-]+)+)
    |(?P<url>\b[a-z][a-z0-9+.-]{1,15}://[^\s'"<>]*)
    |(?P<ip>\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b
        |(?<![\w:])(?=[0-9a-f:]*::|(?:[0-9a-f]{1,4}:){7})[0-9a-f:]{2,39}(?![\w:]))
    |(?P<path>(?<![\w/\\.~-])(?:[a-z]:|~|\.\.?|\w[\w.@%+~-]*)?(?:[/\\][\w.@%+~-]+)+[/\\]?)
    |(?P<hex>\b0x[0-9a-f]+\b)
    |(?P<id>(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[a-z])[\w-]{6,}(?![\w-]))
    |(?P<n>(?<![\w.])\d+(?:\.\d+)?)
    |(?P<digits>\d+)
    """,
    re.IGNORECASE | re.VERBOSE,
)
_PLACEHOLDERS = {name: f"<{'n' if name == 'digits' else name}>" for name in _VARIABLE.groupindex}


def _placeholder(match: re.Match[str]) -> str:
    return _PLACEHOLDERS[match.lastgroup or "n"]


@functools.lru_cache(maxsize=2048)
def normalise_message(message: str) -> str:
    """``message`` with its variable parts as placeholders and its whitespace collapsed:
    ``"User 123 failed: 'abc'"`` → ``"User <n> failed: <str>"``."""
    text = message[:MAX_MESSAGE_CHARS]
    if "'" in text or '"' in text:
        text = _QUOTED.sub("<str>", text)
    tokens = text.split()
    for i, token in enumerate(tokens):
        if _NEEDS_WORK.search(token):
            tokens[i] = _VARIABLE.sub(_placeholder, token)
    return " ".join(tokens)


def message_fingerprint(logger_or_component: str | None, message: str) -> str:
    """The fingerprint of a message without a traceback (a log record, a ``publish_error``):
    the logger (or component) name and the normalised message. Messages recur: a short one's
    fingerprint is remembered (normalising and hashing it cost an event ~2k instructions)."""
    if type(message) is not str:
        message = str(message)
    if logger_or_component is not None and type(logger_or_component) is not str:  # received
        logger_or_component = str(logger_or_component) if logger_or_component else None
    key = (logger_or_component, message)
    known = _messages.get(key)
    if known is None:
        known = _digest(f"msg\n{logger_or_component or ''}\n{normalise_message(message)}")
        if len(message) <= MAX_REMEMBERED_CHARS:
            if len(_messages) >= MAX_MESSAGES:
                _messages.clear()
            _messages[key] = known
    return known


#: The fingerprints of recent short messages: ``(logger or component, message) -> fingerprint``.
_messages: dict[tuple[str | None, str], str] = {}
MAX_MESSAGES = 4096
MAX_REMEMBERED_CHARS = 256


# --- per-call fingerprints -----------------------------------------------------------------------


def fingerprint_parts(value: Any) -> tuple[str, ...]:
    """``value`` checked as a custom fingerprint (a non-empty list of strings); call it where
    the caller can be told (``capture_exception(fingerprint=…)``), not on the publisher thread."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"fingerprint must be a list of strings, e.g. ['{{{{ default }}}}', 'db'], "
            f"got {type(value).__name__}"
        )
    if not value:
        raise ValueError("fingerprint must not be empty")
    for part in value:
        if not isinstance(part, str):
            raise TypeError(f"fingerprint parts must be strings, got {type(part).__name__}")
    return tuple(value)


def custom_fingerprint(parts: Sequence[str], default: str) -> str:
    """The fingerprint a caller asked for, ``"{{ default }}"`` standing for ``default``.

    ``["{{ default }}"]`` alone is ``default`` itself: the event stays in its usual group.
    """
    checked = fingerprint_parts(parts)
    resolved = [default if DEFAULT_PART.fullmatch(part.strip()) else part for part in checked]
    if resolved == [default]:
        return default
    return _digest("custom\n" + "\n".join(resolved))


def event_fingerprint(event: Mapping[str, Any]) -> str:
    """An event's fingerprint: its own, or (from a publisher that sends none) one made from
    its component and message, as :func:`message_fingerprint` would have."""
    given = event.get("fingerprint")
    if is_fingerprint(given):
        return str(given)
    return message_fingerprint(event.get("component"), str(event.get("message") or ""))
