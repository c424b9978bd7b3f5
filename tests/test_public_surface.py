"""keel's public surface: a map that holds. Twins stay twins, every export is documented, and
`import keel` stays light."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import keel
import keel.batch
import keel.bulk
import keel.ratelimit
import keel.tools

TWINS = [
    (keel.Client, keel.AsyncClient),
    (keel._client.Messages, keel._client.AsyncMessages),
    (keel.ResilientStream, keel.AsyncResilientStream),
]
ASYNC_NAMES = {"__aenter__": "__enter__", "__aexit__": "__exit__", "__aiter__": "__iter__"}


def public_methods(cls: type) -> dict[str, Any]:
    """Public methods and properties by name, the async protocol methods under their sync names."""
    names = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and name not in ASYNC_NAMES and name not in ASYNC_NAMES.values():
            continue
        if name in ("__init_subclass__", "__subclasshook__"):
            continue
        if callable(member) or isinstance(member, property):
            names[ASYNC_NAMES.get(name, name)] = member
    return names


def shape(member: Any) -> list[tuple[str, Any, Any]]:
    """A method's parameters (name, kind, default): what a caller sees, whatever the types are on each side."""
    if isinstance(member, property):
        return [("property", None, None)]
    return [(p.name, p.kind, p.default) for p in inspect.signature(member).parameters.values()]


@pytest.mark.parametrize(("sync", "async_"), TWINS, ids=lambda cls: cls.__name__)
def test_sync_and_async_twins_have_the_same_methods_and_signatures(sync: type, async_: type) -> None:
    mine, theirs = public_methods(sync), public_methods(async_)
    assert sorted(mine) == sorted(theirs)
    for name in mine:
        if name == "__init__":
            continue  # each wraps its own SDK client type; the keyword options are compared below
        assert shape(mine[name]) == shape(theirs[name]), name
    init = [p for p in shape(sync.__init__) if p[1] is inspect.Parameter.KEYWORD_ONLY]
    assert init == [p for p in shape(async_.__init__) if p[1] is inspect.Parameter.KEYWORD_ONLY]


EXPORTS = [
    getattr(module, name)
    for module in (keel, keel.tools, keel.batch, keel.bulk, keel.ratelimit)
    for name in module.__all__
    if name != "__version__"
]


@pytest.mark.parametrize(
    "cls", [e for e in EXPORTS if dataclasses.is_dataclass(e) and isinstance(e, type)], ids=lambda c: c.__name__
)
def test_every_exported_dataclass_documents_its_attributes(cls: type) -> None:
    docs = "\n".join(inspect.getdoc(base) or "" for base in cls.__mro__ if dataclasses.is_dataclass(base))
    documented = set(re.findall(r"^ +(\w+): \S", docs, re.M))  # an "Attributes:" entry: `    name: what it is`
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in documented]
    assert not missing, f"{cls.__name__}'s docstring does not say what {missing} are"


EXCEPTIONS = sorted(
    {e for e in EXPORTS if isinstance(e, type) and issubclass(e, BaseException)}, key=lambda cls: cls.__name__
)


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=lambda c: c.__name__)
def test_every_public_exception_is_a_keel_error_with_a_docstring(exc: type) -> None:
    assert issubclass(exc, keel.KeelError)
    assert exc.__doc__ and len(exc.__doc__.split()) >= 5  # says when it is raised


def test_all_public_exceptions_are_exported_from_keel() -> None:
    assert set(EXCEPTIONS) <= {getattr(keel, name) for name in keel.__all__}
    assert len(EXCEPTIONS) >= 16


def test_import_keel_does_not_import_the_emulator_nor_opentelemetry() -> None:
    # keel.Telemetry's module included: OpenTelemetry is imported when a client with telemetry is made
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, keel; keel.Telemetry; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "keel" in loaded and "keel._telemetry" in loaded
    heavy = [
        name
        for name in loaded
        if name.split(".")[0] in ("starlette", "uvicorn", "opentelemetry") or name.startswith("keel.emu")
    ]
    assert heavy == []


def test_every_public_name_is_imported_lazily_from_the_module_the_type_checkers_see() -> None:
    """keel/__init__.py imports each name for type checkers and maps it to its module for run time: the two agree."""
    import ast

    tree = ast.parse(Path(keel.__file__).read_text())
    checked = next(node for node in tree.body if isinstance(node, ast.If))  # `if TYPE_CHECKING:`
    imported = {
        alias.name: node.module for node in checked.body if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert imported == keel._EXPORTS
    assert all(
        getattr(keel, name) is getattr(importlib.import_module(module), name) for name, module in imported.items()
    )
    assert sorted(keel.__all__) == sorted(["__version__", *imported])
    with pytest.raises(AttributeError, match="no attribute 'NotAName'"):
        _ = keel.NotAName  # type: ignore[attr-defined]
