"""The code an entry computes with, found by reading source (nothing is imported), and its digest.

One rule for every entry (a method, a model, a dataset's decoder; built-in or the user's): its
digest covers the source of the function(s) it computes with and, followed through their imports,
the code of the user's own folders that they reach, directly or transitively. Code of the standard
library and of installed packages (site-packages: torch, NumPy, label-relaxation...) is the
environment, not an entry's (each run records its versions in environment.parquet).

- In lsbench's own modules the unit is a top-level definition: registries keep many entries in one
  file (every method's objective is in methods.py), so an entry covers its function, and the
  functions, classes and constants of lsbench that it names, transitively, not their whole files.
  Adding a method or editing another leaves an entry's digest as it was.
- In a user's module the unit is the whole file (its import-time code counts too) and every module
  of the user's own folders that it imports (`import x`, `from . import y`, inside functions too),
  with the packages that contain them (their `__init__.py` runs on import). An entry's own
  top-level package counts even where it is installed (a factory in a pip-installed package).

Modules are found where Python would import them: one already imported where it is (a training
job), else with `importlib.machinery.PathFinder` on `search_path`, the way a training job will look.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import site
import sys
import sysconfig
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec, PathFinder
from importlib.util import decode_source
from pathlib import Path
from typing import Iterable

DIGEST_CHARS = 16  # 64 bits of sha256: no two definitions of one study meet by chance
OWN_PACKAGE = "lsbench"  # name by name (see the module docstring), wherever it is installed


def code_digest(roots: Iterable[tuple[str, str | None]], search_path: list[str],
                skip: frozenset[str] = frozenset(), extra: Iterable[str] = ()) -> str:
    """The first `DIGEST_CHARS` hex digits of the sha256 of `code_parts(roots, search_path, skip)`
    and `extra` (strings such as an entry's parameter range). Files count by content and module
    name, not by path: the same code reached through another folder has the same digest."""
    parts = [f"{label}\0{text}" for label, text in sorted(code_parts(roots, search_path, skip).items())]
    text = "\0\0".join([*parts, *extra])
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:DIGEST_CHARS]


def code_parts(roots: Iterable[tuple[str, str | None]], search_path: list[str],
               skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """label -> source text of everything `roots` compute with. A root is (module, name): a
    top-level definition of a module, or the whole module with name None (a user's module is
    always whole). `skip`: lsbench names not to follow (a registry's dispatch table, whose
    entries are roots of their own). Raises LookupError naming a root's module that is not found."""
    roots = list(roots)
    walk = _Walk(search_path, skip, frozenset(m.split(".")[0] for m, _ in roots))
    for module, name in roots:
        spec = walk.spec(module)
        if spec is None:
            raise LookupError(f"cannot find module {module!r}")
        if name is not None and is_own_module(module, spec, walk.own) and not walk.binds(module, name):
            name = None  # not a top-level name (a lambda, a nested function): its whole module
        walk.visit(module, name)
    return walk.parts


def is_own_module(name: str, spec: ModuleSpec | None, own: frozenset[str] = frozenset()) -> bool:
    """Whether a module's source is code the digests follow: a .py file of lsbench, of the
    top-level packages named in `own` (an entry's own package, even when installed), or of the
    user's folders (not the standard library, not an installed package)."""
    if name.split(".")[0] in own | {OWN_PACKAGE}:
        return spec is not None and _source_file(spec) is not None
    if name.split(".")[0] in sys.stdlib_module_names or spec is None or _source_file(spec) is None:
        return False
    path = _source_file(spec).resolve()
    if {"site-packages", "dist-packages"} & set(path.parts):
        return False
    return not any(path.is_relative_to(d) for d in _environment_dirs())


@functools.cache
def _environment_dirs() -> list[Path]:
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    dirs = [sysconfig.get_path(n) for n in names] + site.getsitepackages() + [site.getusersitepackages()]
    return [Path(d).resolve() for d in dirs if d]


def _source_file(spec: ModuleSpec) -> Path | None:
    origin = spec.origin
    return Path(origin) if origin and origin.endswith(".py") and Path(origin).is_file() else None


@dataclass
class _Module:
    source: str
    tree: ast.Module
    package: str  # what a relative import is relative to
    definitions: dict[str, ast.stmt]  # top-level name -> the statement that binds it
    imports: dict[str, tuple[str, str | None]]  # top-level alias -> (module, name or None)


@dataclass
class _Walk:
    search_path: list[str]
    skip: frozenset[str]
    own: frozenset[str]  # the roots' top-level packages
    parts: dict[str, str] = field(default_factory=dict)
    _specs: dict[str, ModuleSpec | None] = field(default_factory=dict)
    _parsed: dict[str, _Module] = field(default_factory=dict)
    _seen: set[tuple[str, str | None]] = field(default_factory=set)

    def spec(self, name: str) -> ModuleSpec | None:
        """Where `name` is imported from, without importing it (its parent package's folders
        for a submodule)."""
        if name not in self._specs:
            self._specs[name] = _find_spec(name, self.search_path, self.spec)
        return self._specs[name]

    def binds(self, module: str, name: str) -> bool:
        """Whether `name` is bound at the top level of `module` (an own module)."""
        parsed = self._parse(module, self.spec(module))
        return name in parsed.definitions or name in parsed.imports

    def visit(self, module: str, name: str | None) -> None:
        spec = self.spec(module)
        if not is_own_module(module, spec, self.own) or (module, name) in self._seen:
            return
        self._seen.add((module, name))
        parsed = self._parse(module, spec)
        if module.split(".")[0] != OWN_PACKAGE:
            name = None  # a user's module counts whole
        if name is None:
            self.parts[module] = parsed.source
            for parent in _parents(module):
                self.visit(parent, None)
            for target in _imported(parsed.tree, parsed.package):
                self.visit(*target)
            return
        node = parsed.definitions.get(name)
        if node is None:  # an imported name, or a submodule: follow it
            target = parsed.imports.get(name)
            if target is not None:
                self.visit(*self._resolve(*target))
            elif self.spec(f"{module}.{name}") is not None:
                self.visit(f"{module}.{name}", None)
            return
        self.parts[f"{module}:{name}"] = _segment(parsed.source, node)
        self._follow(module, parsed, node)

    def _follow(self, module: str, parsed: _Module, node: ast.stmt) -> None:
        local = dict(parsed.imports)
        for sub in ast.walk(node):  # imports inside a function bind names too
            if isinstance(sub, (ast.Import, ast.ImportFrom)):
                local.update(_bindings(sub, parsed.package))
        for sub in _computing(node):
            if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id in local:
                base, attr = local[sub.value.id]
                mod = f"{base}.{attr}" if attr else base
                if self.spec(mod) is not None:  # `methods.X`: X of that module
                    self.visit(mod, sub.attr)
            elif isinstance(sub, ast.Name) and sub.id not in self.skip:
                if sub.id in parsed.definitions:
                    self.visit(module, sub.id)
                elif sub.id in local:
                    target = self._resolve(*local[sub.id])
                    # A module of lsbench named bare (`methods`) counts by the names used from it.
                    if not (target[1] is None and target[0].split(".")[0] == OWN_PACKAGE):
                        self.visit(*target)

    def _resolve(self, module: str, name: str | None) -> tuple[str, str | None]:
        """(module, name) of `from module import name`: the submodule when `name` is one."""
        if name is not None and self.spec(f"{module}.{name}") is not None:
            return f"{module}.{name}", None
        return module, name

    def _parse(self, module: str, spec: ModuleSpec) -> _Module:
        if module not in self._parsed:
            raw = _source_file(spec).read_bytes()
            try:
                source = decode_source(raw)  # as Python reads it: a coding cookie, else UTF-8
                tree = ast.parse(source)
            except (SyntaxError, UnicodeDecodeError, ValueError):
                # The job's import will say what is wrong; the plan counts the bytes as they are.
                source, tree = raw.decode("utf-8", "surrogateescape"), ast.Module(body=[], type_ignores=[])
            package = module if spec.submodule_search_locations else module.rpartition(".")[0]
            definitions: dict[str, ast.stmt] = {}
            imports: dict[str, tuple[str, str | None]] = {}
            for stmt in _top_level(tree.body):
                if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    imports.update(_bindings(stmt, package))
                for bound in _bound_names(stmt):
                    definitions[bound] = stmt
            self._parsed[module] = _Module(source, tree, package, definitions, imports)
        return self._parsed[module]


def _find_spec(name: str, search_path: list[str], parent_spec) -> ModuleSpec | None:  # noqa: ANN001
    loaded = sys.modules.get(name)
    if getattr(loaded, "__spec__", None) is not None:
        return loaded.__spec__
    parent = name.rpartition(".")[0]
    if parent:
        found = parent_spec(parent)
        if found is None or not found.submodule_search_locations:
            return None
        return PathFinder.find_spec(name, list(found.submodule_search_locations))
    try:
        return PathFinder.find_spec(name, search_path)
    except (ImportError, ValueError):  # a malformed name in an import statement
        return None


def _computing(node: ast.AST) -> list[ast.AST]:
    """The nodes of `node` outside annotations: under `from __future__ import annotations` a
    type hint is never evaluated, so a class named only there is not code the entry runs."""
    hints = [n.annotation for n in ast.walk(node) if isinstance(n, (ast.arg, ast.AnnAssign)) and n.annotation]
    hints += [n.returns for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.returns]
    excluded = {id(h) for hint in hints for h in ast.walk(hint)}
    return [n for n in ast.walk(node) if id(n) not in excluded]


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _top_level(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    """Module-level statements, including those inside `if`/`try`/`with` blocks."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.Try, ast.With)):
            for block in (getattr(stmt, "body", []), getattr(stmt, "orelse", []), getattr(stmt, "finalbody", [])):
                yield from _top_level(block)
            for handler in getattr(stmt, "handlers", []):
                yield from _top_level(handler.body)


def _bound_names(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _absolute(module: str | None, level: int, package: str) -> str:
    if level == 0:
        return module or ""
    base = package.rsplit(".", level - 1)[0] if level > 1 else package
    return f"{base}.{module}" if module else base


def _bindings(stmt: ast.Import | ast.ImportFrom, package: str) -> dict[str, tuple[str, str | None]]:
    """alias -> (module, imported name or None) of one import statement."""
    if isinstance(stmt, ast.Import):
        return {(a.asname or a.name.split(".")[0]): ((a.name if a.asname else a.name.split(".")[0]), None)
                for a in stmt.names}
    module = _absolute(stmt.module, stmt.level, package)
    return {(a.asname or a.name): (module, a.name) for a in stmt.names if a.name != "*"}


def _imported(tree: ast.Module, package: str) -> list[tuple[str, str | None]]:
    """Every module a file imports, anywhere in it, as (module, name) to visit; `from m import x`
    gives (m, x), which `_Walk.visit` reads as the submodule m.x when there is one."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level, package)
            found.append((module, None))
            found += [(f"{module}.{a.name}", None) for a in node.names if a.name != "*"]
    return [(m, n) for m, n in found if m]


def _segment(source: str, node: ast.stmt) -> str:
    """A definition's source lines, decorators included."""
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return "\n".join(source.splitlines()[start - 1:node.end_lineno])


def builtin_registry(path: Path, registry: str) -> dict[str, str]:
    """entry name -> the name of its builder in a registry written as a dict literal of
    `"name": builder` (lsbench.models' MODELS), read from the file without importing it (torch)."""
    for stmt in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = _bound_names(stmt) if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else []
        if registry in targets and isinstance(stmt.value, ast.Dict):
            return {k.value: v.id for k, v in zip(stmt.value.keys, stmt.value.values)
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Name)}
    raise LookupError(f"{path}: no dict literal {registry}")
