"""The package's shape, as issue 11 defines it ("done means"), checked over the production
modules: every ``worker/**.py`` but the development tools (``worker/emulator/``,
``worker/demo.py``), which the image leaves out.

- No import cycle among production modules. Every import counts, wherever it is (inside a
  function, under ``TYPE_CHECKING``). ``from a.b import c`` is an edge to ``a.b.c`` when that
  is a module, else to ``a.b``; importing a module also imports its packages' ``__init__``,
  so that is an edge too, except from a module inside that package (whose ``__init__`` is
  already being imported when the module is).
- No production class over 250 lines; no production module over 450 lines.
- At most two production modules outside the per-API areas (``worker/apis/<api>/``) name an
  API. "Name" means in code: a name (identifier, attribute, import) or a string literal
  that contains ``datocms`` or ``bloomreach`` (any case). Prose does not count: comments,
  docstrings, and string literals with whitespace in them (help texts, log and error
  messages) may say which API a rule comes from; code may not depend on it. A string
  without whitespace is a value (a kind, an operation's name, a logger's name): it counts.

Issue 24 adds:

- Import reach: following every import (as above) from the pure modules (``messages``,
  ``outcomes``, ``batching``, ``contract``, the ``client`` library, and the catalog
  ``registry``) reaches no adapter (``worker/apis/<api>/adapter.py``), no ``http``,
  ``limiter``, ``metrics``, nothing of the pipeline or the app, and not the broker's session,
  run and partitions modules.
- Adapters are built in one place: only the pipeline imports ``worker.apis.factory``.
- Scope belongs to the API: outside ``worker/apis/<api>/`` no production module names a
  scope field of any API (the catalog's ``SCOPES``: ``environment``, ``catalog_id``) in code
  (a name, or a string literal without whitespace that contains it as a word: flags,
  ``Literal`` values, dict keys), and only the catalog (``worker.registry``) names an API.
- Settlement in one place (``worker.pipeline.settlement``): no other production module sets
  a request's ``settled`` flag, counts an answered item (``item_outcomes``,
  ``item_failures``, ``end_to_end``) or acks an answered delivery (a bare ``.ack()`` in the
  pipeline or the broker's session and run); outcome and reply messages are constructed only
  in ``worker.outcomes`` (``Heading``), which the settlement asks.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV_ONLY = ("worker/emulator/", "worker/demo.py")
APIS = ("datocms", "bloomreach")
API_AREAS = tuple(f"worker/apis/{api}{end}" for api in APIS for end in ("/", ".py"))
API_NAME = re.compile("|".join(APIS), re.IGNORECASE)
MAX_CLASS_LINES = 250
MAX_MODULE_LINES = 450
MAX_MODULES_NAMING_AN_API = 2


def production_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every production module under ``root``."""
    modules = {}
    for path in sorted((root / "worker").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(DEV_ONLY):
            continue
        parts = rel.removesuffix(".py").split("/")
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(module: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every module an import statement in the file imports by name."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in known else base


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the production modules it imports (see the module docstring)."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges: set[str] = set()
        for name in _imported(module, path, modules):
            parts = name.split(".")
            for end in range(1, len(parts) + 1):
                imported = ".".join(parts[:end])
                inside = module == imported or module.startswith(imported + ".")
                if imported in modules and (end == len(parts) or not inside):
                    edges.add(imported)
        edges.discard(module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def long_classes(modules: dict[str, Path]) -> list[str]:
    out = []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    out.append(f"{module}.{node.name}: {lines} lines")
    return out


def long_modules(modules: dict[str, Path]) -> list[str]:
    out = []
    for module, path in modules.items():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            out.append(f"{module}: {lines} lines")
    return out


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        if isinstance(node, kinds) and node.body:
            first = node.body[0]
            is_str = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            if is_str and isinstance(first.value.value, str):
                end = first.end_lineno or first.lineno
                lines.update(range(first.lineno, end + 1))
    return lines


def _is_prose(literal: str, line: int, docstrings: set[int]) -> bool:
    body = literal.lstrip("rRbBuUfF").strip("'\"")
    return line in docstrings or any(c.isspace() for c in body)


def names_an_api(path: Path) -> list[str]:
    """The names and string literals in the file's code that name an API."""
    source = path.read_text()
    docstrings = _docstring_lines(ast.parse(source))
    hits = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in (tokenize.NAME, tokenize.STRING):
            continue
        if token.type == tokenize.STRING and _is_prose(token.string, token.start[0], docstrings):
            continue
        if API_NAME.search(token.string):
            hits.append(f"{token.start[0]}: {token.string[:60]}")
    return hits


def modules_naming_an_api(modules: dict[str, Path], root: Path = ROOT) -> dict[str, list[str]]:
    out = {}
    for module, path in modules.items():
        if path.relative_to(root).as_posix().startswith(API_AREAS):
            continue
        hits = names_an_api(path)
        if hits:
            out[module] = hits
    return out


# -- the rules ------------------------------------------------------------------------------


def test_no_import_cycle_among_production_modules() -> None:
    assert cycles(import_graph(production_modules())) == []


def test_no_production_class_over_250_lines() -> None:
    assert long_classes(production_modules()) == []


def test_no_production_module_over_450_lines() -> None:
    assert long_modules(production_modules()) == []


def test_at_most_two_production_modules_outside_the_api_areas_name_an_api() -> None:
    naming = modules_naming_an_api(production_modules())
    assert len(naming) <= MAX_MODULES_NAMING_AN_API, "\n".join(
        f"{module}: {hits[:3]}" for module, hits in sorted(naming.items())
    )


PURE_ROOTS = (
    "worker.messages",
    "worker.outcomes",
    "worker.batching",
    "worker.contract",
    "worker.client",
    "worker.registry",
    "worker.control.messages",  # issue 23: the CLI, the client and the worker validate alike
    "worker.control.state",
)
IMPURE = re.compile(
    r"^worker\.(apis\.[a-z_]+\.adapter|http|limiter|metrics|pipeline(\..*)?|app"
    r"|broker\.(session|run|partitions))$"
)


def reach(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), set()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def impure_reach(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    out = {}
    for root in PURE_ROOTS:
        bad = sorted(m for m in reach(graph, root) if IMPURE.match(m))
        if bad:
            out[root] = bad
    return out


def test_the_pure_modules_reach_no_adapter_and_no_io() -> None:
    graph = import_graph(production_modules())
    assert all(root in graph for root in PURE_ROOTS)
    assert impure_reach(graph) == {}


def test_only_the_pipeline_builds_adapters() -> None:
    graph = import_graph(production_modules())
    users = {m for m, edges in graph.items() if "worker.apis.factory" in edges}
    assert users, "the factory is used"
    assert all(m.startswith("worker.pipeline.") for m in users), sorted(users)


def names_a_scope_field(path: Path, fields: tuple[str, ...]) -> list[str]:
    """The names and value strings in the file's code that name one of ``fields``."""
    source = path.read_text()
    docstrings = _docstring_lines(ast.parse(source))
    word = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, fields)) + r")(?![a-z0-9])")
    hits = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME and token.string in fields:
            hits.append(f"{token.start[0]}: {token.string}")
        elif token.type == tokenize.STRING:
            value = not _is_prose(token.string, token.start[0], docstrings)
            if value and word.search(token.string.replace("-", "_")):
                hits.append(f"{token.start[0]}: {token.string[:60]}")
    return hits


def modules_naming_a_scope_field(
    modules: dict[str, Path], fields: tuple[str, ...], root: Path = ROOT
) -> dict[str, list[str]]:
    out = {}
    for module, path in modules.items():
        if path.relative_to(root).as_posix().startswith(API_AREAS):
            continue
        hits = names_a_scope_field(path, fields)
        if hits:
            out[module] = hits
    return out


def scope_fields() -> tuple[str, ...]:
    from worker.registry import AREAS

    return tuple(spec.scope.name for spec in AREAS)


def test_no_production_module_outside_the_api_areas_names_a_scope_field() -> None:
    fields = scope_fields()
    assert set(fields) >= {"environment", "catalog_id"}
    assert modules_naming_a_scope_field(production_modules(), fields) == {}


def test_only_the_catalog_names_an_api() -> None:
    naming = modules_naming_an_api(production_modules())
    assert sorted(naming) == ["worker.registry"], naming


PLUGIN_AREA = "tests/plugin_api/"
PLUGIN_KIT = ("worker.apis.base", "worker.apis.adapters", "worker.errors", "worker.http")
PLUGIN_KIT += ("worker.limiter",)


def test_the_third_api_touches_nothing_outside_its_area_and_the_tests() -> None:
    """``tests/plugin_api`` (issue 24's proof) is added as any API would be: nothing outside
    it and the tests names it, and it uses only the kit every API area uses."""
    outside = [
        path.relative_to(ROOT).as_posix()
        for path in sorted(ROOT.rglob("*"))
        if path.is_file()
        and path.suffix in (".py", ".toml", ".yaml", ".yml", ".tpl", ".json", ".cfg")
        and not path.relative_to(ROOT).as_posix().startswith((PLUGIN_AREA, "tests/", "."))
        and "/node_modules/" not in path.as_posix()
        and re.search(r"plugin_api|searchidx", path.read_text(errors="replace"))
    ]
    assert outside == []
    area = ROOT / PLUGIN_AREA
    assert sorted(p.name for p in area.glob("*.py")) == [
        "__init__.py",
        "adapter.py",
        "server.py",
        "spec.py",
        "target.py",
    ]
    for path in area.glob("*.py"):
        for name in _imported("tests.plugin_api.x", path, {}):
            if name.startswith("worker"):
                assert name in PLUGIN_KIT, f"{path.name} imports {name}"


SETTLEMENT = "worker.pipeline.settlement"
ANSWER_METRICS = {"item_outcomes", "item_failures", "end_to_end"}
ANSWERING = re.compile(r"^worker\.(pipeline\..*|broker\.(session|run))$")


def settlement_outside_its_owner(modules: dict[str, Path]) -> list[str]:
    """Every place outside the settlement that settles, counts or acks an answer, or outside
    ``worker.outcomes`` that constructs an outcome or a reply."""
    out = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        for node in ast.walk(tree):
            where = f"{module}:{getattr(node, 'lineno', 0)}"
            if module != SETTLEMENT:
                stored = isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                if stored and getattr(node, "attr", None) == "settled":
                    out.append(f"{where} sets settled")
                if isinstance(node, ast.Attribute) and node.attr in ANSWER_METRICS:
                    is_metrics = isinstance(node.value, ast.Attribute | ast.Name)
                    if (
                        is_metrics
                        and module != "worker.metrics"
                        and "metrics" in ast.unparse(node.value)
                    ):
                        out.append(f"{where} counts {node.attr}")
                if (
                    ANSWERING.match(module)
                    and isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "ack"
                    and not node.args
                ):
                    out.append(f"{where} acks")
            if module != "worker.outcomes" and isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else None
                if name in ("Outcome", "Reply") and name not in defined:
                    out.append(f"{where} builds {name}")
    return out


def test_settlement_has_one_owner() -> None:
    modules = production_modules()
    assert SETTLEMENT in modules
    assert settlement_outside_its_owner(modules) == []


# -- the checks themselves -------------------------------------------------------------------


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Function-level, TYPE_CHECKING, relative and ``from package import module`` imports are
    all edges; a cycle through them is found."""
    pkg = tmp_path / "worker" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "worker" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from worker.sub import a\n")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from worker.sub.a import f\n"
    )
    (tmp_path / "worker" / "c.py").write_text("import worker.sub.a\n")
    graph = import_graph(production_modules(tmp_path))
    assert graph["worker.sub.a"] == {"worker.sub.b"}
    assert graph["worker.sub.b"] == {"worker.sub.a"}
    assert graph["worker.c"] == {"worker.sub.a", "worker.sub"}  # the package's __init__ too
    assert graph["worker.sub"] == {"worker.sub.a"}
    assert cycles(graph) == [["worker.sub.a", "worker.sub.b"]]


def test_import_reach_follows_imports_through_other_modules(tmp_path: Path) -> None:
    (tmp_path / "worker" / "apis" / "x").mkdir(parents=True)
    (tmp_path / "worker" / "__init__.py").write_text("")
    (tmp_path / "worker" / "messages.py").write_text("import worker.registry\n")
    (tmp_path / "worker" / "registry.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from worker.apis.x import adapter\n"
    )
    (tmp_path / "worker" / "apis" / "x" / "adapter.py").write_text("")
    graph = import_graph(production_modules(tmp_path))
    assert impure_reach(graph) == {
        "worker.messages": ["worker.apis.x.adapter"],
        "worker.registry": ["worker.apis.x.adapter"],
    }


def test_settlement_outside_its_owner_is_found(tmp_path: Path) -> None:
    (tmp_path / "worker" / "broker").mkdir(parents=True)
    (tmp_path / "worker" / "broker" / "run.py").write_text(
        "async def f(t, m, d):\n    t.settled = True\n    m.metrics.item_outcomes.inc()\n"
        "    await d.ack()\n    return Outcome(1)\n"
    )
    found = settlement_outside_its_owner(production_modules(tmp_path))
    kinds = sorted(f.split(" ", 1)[1] for f in found)
    assert kinds == ["acks", "builds Outcome", "counts item_outcomes", "sets settled"]


def test_naming_a_scope_field_counts_code_not_prose(tmp_path: Path) -> None:
    (tmp_path / "worker" / "apis" / "datocms").mkdir(parents=True)
    files = {
        "prose.py": '"""The environment."""\nHELP = "DatoCMS environment (primary if absent)"\n',
        "name.py": "def f(job):\n    return job.environment\n",
        "flag.py": 'FLAG = "--catalog-id"\n',
        "literal.py": 'from typing import Literal\nF = Literal["environment", "x"]\n',
        "other.py": 'ENV = "BULKOPS_ENVIRONMENTS"\nx = "environments"\n',
        "apis/datocms/wire.py": 'F = "environment"\n',
    }
    for name, text in files.items():
        (tmp_path / "worker" / name).write_text(text)
    fields = ("environment", "catalog_id")
    naming = modules_naming_a_scope_field(production_modules(tmp_path), fields, tmp_path)
    assert sorted(naming) == ["worker.flag", "worker.literal", "worker.name"]


def test_naming_an_api_counts_code_not_prose(tmp_path: Path) -> None:
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "prose.py").write_text(
        '"""DatoCMS answers 202."""\n# Bloomreach too\ndef f():\n    """bloomreach"""\n'
    )
    (tmp_path / "worker" / "help.py").write_text('HELP = "serve the DatoCMS emulator"\n')
    (tmp_path / "worker" / "code.py").write_text('KIND = "datocms"\n')
    (tmp_path / "worker" / "fstring.py").write_text('def k(t):\n    return f"datocms\\x00{t}"\n')
    (tmp_path / "worker" / "name.py").write_text("from worker.x import Bloomreach\n")
    (tmp_path / "worker" / "apis" / "datocms").mkdir(parents=True)
    (tmp_path / "worker" / "apis" / "datocms" / "wire.py").write_text('KIND = "datocms"\n')
    naming = modules_naming_an_api(production_modules(tmp_path), tmp_path)
    assert sorted(naming) == ["worker.code", "worker.fstring", "worker.name"]
