"""Mutants of what mutmut leaves alone: module-level tables, default policies, thresholds and class attributes.

mutmut 3 mutates function bodies only. This mutator walks the statements at module level and in class bodies
(never into a function) and makes one mutant per change:

- a number n becomes n + 1 and n - 1; True and False swap;
- a string without white space gets "XX" around it, and so does a sentence that is a module-level constant
  of its own (a phrase matched against messages, a prompt); a sentence inside a table row is its note, text
  for people rather than a decision, and is left alone;
- each element of a tuple, list, set or dict display of two or more is dropped in turn (a table row, a key);
- a comparison is negated (`is` / `is not`, `==` / `!=`, `<` / `<=` ...), `and` / `or` swap, `not` is
  dropped, and `reversed(x)` becomes `x`.

Docstrings, imports, `__all__`, decorators, base classes, annotations and `Literal[...]` types are not mutated:
they decide nothing at run time. A mutant's name is its module, the statement it is in (the assigned names,
or the call) and the change, e.g. `keel._modes BATCH_MIN_REQUESTS: 2 -> 3`: stable while the code moves.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Step = tuple[str, int | None]  # a field of a node, and the index in it when the field is a list
Path = tuple[Step, ...]
Change = Callable[[ast.AST], ast.AST | None]  # the replacement of a node; None drops it from its list

_NEGATED: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
}


@dataclass(frozen=True)
class Mutant:
    """One change to one module.

    Attributes:
        module: the dotted module name, e.g. "keel._modes".
        name: the mutant's stable name: module, statement and change.
        source: the whole module with the change made.
    """

    module: str
    name: str
    source: str


def mutants(module: str, source: str) -> list[Mutant]:
    """Every mutant of `source` (the text of `module`), in the order of the code."""
    tree = ast.parse(source)
    made: list[Mutant] = []
    for site in _sites(tree):
        for what, change in _changes(site):
            label = f"{site.label} " if site.label else ""
            made.append(Mutant(module, f"{module} {site.owner}: {label}{what}", _apply(tree, site.path, change)))
    return made


@dataclass(frozen=True)
class _Site:
    """A node that may change: the statement that owns it, where it is, and how it sits in a call."""

    owner: str
    path: Path
    node: ast.AST
    label: str  # "arg 3" or "budget=" for an argument of a call, else ""
    whole: bool  # the whole value of a module-level assignment: a named constant


def _statements(
    body: list[ast.stmt], prefix: str, path: Path
) -> Iterator[tuple[str, Path, ast.Assign | ast.AnnAssign | ast.Expr]]:
    """The statements that run at import: module level and class bodies, with the name that owns each."""
    for index, statement in enumerate(body):
        here = (*path, ("body", index))
        if isinstance(statement, ast.ClassDef):
            yield from _statements(statement.body, f"{prefix}{statement.name}.", here)
        elif isinstance(statement, ast.Assign | ast.AnnAssign | ast.Expr):
            if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                continue  # a docstring
            owner = _owner(statement)
            if owner != "__all__":
                yield prefix + owner, here, statement


def _owner(statement: ast.Assign | ast.AnnAssign | ast.Expr) -> str:
    if isinstance(statement, ast.Expr):
        return ast.unparse(statement.value.func) if isinstance(statement.value, ast.Call) else "expression"
    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
    return ", ".join(ast.unparse(target) for target in targets)


def _sites(tree: ast.Module) -> Iterator[_Site]:
    for owner, path, statement in _statements(tree.body, "", ()):
        named = isinstance(statement, ast.Assign | ast.AnnAssign) and "." not in owner
        for site in _nodes(statement, owner, path, ""):
            yield _Site(site.owner, site.path, site.node, site.label, named and site.node is statement.value)


def _nodes(node: ast.AST, owner: str, path: Path, label: str) -> Iterator[_Site]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        return  # mutmut's part
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "Literal":
        return  # a type
    yield _Site(owner, path, node, label, False)
    for field, value in ast.iter_fields(node):
        if isinstance(node, ast.Assign | ast.AnnAssign) and field != "value":
            continue  # the names assigned, and their annotation
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, ast.AST):
                    inner = f"arg {index}" if isinstance(node, ast.Call) and field == "args" else ""
                    yield from _nodes(item, owner, (*path, (field, index)), inner)
        elif isinstance(value, ast.AST):
            inner = f"{node.arg}=" if isinstance(node, ast.keyword) else ""
            yield from _nodes(value, owner, (*path, (field, None)), inner)


def _changes(site: _Site) -> Iterator[tuple[str, Change]]:
    node = site.node
    if isinstance(node, ast.Constant):
        yield from _constant_changes(node, site.whole)
    elif isinstance(node, ast.Tuple | ast.List | ast.Set) and len(node.elts) > 1:
        for index, element in enumerate(node.elts):
            yield f"drop {_short(element)}", _dropping("elts", index)
    elif isinstance(node, ast.Dict) and len(node.keys) > 1:
        for index, key in enumerate(node.keys):
            yield f"drop {_short(key) if key is not None else '**'}", _dropping_item(index)
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _NEGATED:
        negated = ast.Compare(node.left, [_NEGATED[type(node.ops[0])]()], node.comparators)
        yield f"{_short(node)} -> {_short(negated)}", lambda _: negated
    elif isinstance(node, ast.BoolOp):
        swapped = ast.BoolOp(ast.Or() if isinstance(node.op, ast.And) else ast.And(), node.values)
        yield f"{_short(node)} -> {_short(swapped)}", lambda _: swapped
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield f"{_short(node)} -> {_short(node.operand)}", lambda _: node.operand
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "reversed":
        yield f"{_short(node)} -> {_short(node.args[0])}", lambda _: node.args[0]


def _constant_changes(node: ast.Constant, named: bool) -> Iterator[tuple[str, Change]]:
    value = node.value
    if isinstance(value, bool):
        yield f"{value} -> {not value}", _replacing(not value)
    elif isinstance(value, int | float):
        yield f"{value!r} -> {value + 1!r}", _replacing(value + 1)
        yield f"{value!r} -> {value - 1!r}", _replacing(value - 1)
    elif isinstance(value, str) and (named or not any(ch.isspace() for ch in value)):
        yield f"{_short(node)} -> {_short(ast.Constant(f'XX{value}XX'))}", _replacing(f"XX{value}XX")


def _replacing(value: str | bool | int | float) -> Change:
    return lambda _: ast.Constant(value)


def _dropping(field: str, index: int) -> Change:
    def drop(parent: ast.AST) -> ast.AST:
        del getattr(parent, field)[index]
        return parent

    return drop


def _dropping_item(index: int) -> Change:
    def drop(parent: ast.AST) -> ast.AST:
        assert isinstance(parent, ast.Dict)
        del parent.keys[index], parent.values[index]
        return parent

    return drop


def _short(node: ast.AST, width: int = 60) -> str:
    text = ast.unparse(node)
    return text if len(text) <= width else text[: width - 3] + "..."


def _apply(tree: ast.Module, path: Path, change: Change) -> str:
    """The source of a copy of `tree` whose node at `path` is replaced by `change(node)`."""
    mutated = copy.deepcopy(tree)
    parent: ast.AST = mutated
    for field, index in path[:-1]:
        value = getattr(parent, field)
        parent = value[index] if index is not None else value
    field, index = path[-1] if path else ("", None)
    node = getattr(parent, field) if index is None else getattr(parent, field)[index]
    replacement = change(node)
    if replacement is not node:
        if index is None:
            setattr(parent, field, replacement)
        else:
            getattr(parent, field)[index] = replacement
    return ast.unparse(ast.fix_missing_locations(mutated))
