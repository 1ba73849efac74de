"""The house rules of docs/architecture.md, checked from the source: no import cycles, imports
flow one way between the rooms, a light public face that matches the README, small modules."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import codedfarm

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "codedfarm"

# Rooms by layer: a module may import its own room or a room of a lower layer, never up or
# sideways (coordinator and worker know each other only through protocol/).
LAYERS = {
    "errors": 0,
    "logs": 1,
    "signals": 1,
    "settings": 1,
    "stragglers": 1,
    "corruption": 1,
    "redis_conn": 2,
    "heartbeat": 2,
    "protocol": 2,
    "codecs": 2,
    "models": 2,
    "monitoring": 3,
    "shuffle": 3,
    "coordinator": 4,
    "worker": 4,
    "evaluation": 5,
    "server": 5,
    "local": 6,
    "cli": 7,
    "__main__": 8,
    "__init__": 8,
}
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, name: str) -> set[str]:
    """Every codedfarm module ``path`` imports, at module level or inside functions (the
    lazy imports count: a cycle through them is still a cycle), but not for type checking."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("codedfarm"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))  # fmt: skip
            if base.startswith("codedfarm"):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return {m for m in found if m in MODULES}


GRAPH = {name: _imports(path, name) for name, path in MODULES.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_graph_sees_the_package():
    assert len(MODULES) > 40
    assert "codedfarm.worker.core" in GRAPH["codedfarm.worker.batch_engine"]
    assert "codedfarm.protocol" in GRAPH["codedfarm.coordinator.dispatch"]


def test_there_are_no_import_cycles():
    """Tarjan's strongly connected components: any component of more than one module is a
    cycle (lazy imports inside functions included)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            strongconnect(v)
    assert cycles == [], f"import cycles: {cycles}"


def test_imports_flow_one_way_between_rooms():
    assert {_room(m) for m in MODULES} <= set(LAYERS), "a new room needs a layer in this test"
    wrong = [
        f"{m} -> {t}"
        for m, targets in GRAPH.items()
        for t in targets
        if _room(m) != _room(t) and LAYERS[_room(t)] >= LAYERS[_room(m)]
    ]
    assert wrong == [], "imports against the layering (docs/architecture.md):\n" + "\n".join(wrong)


def test_codecs_and_protocol_import_no_infrastructure():
    for name, path in MODULES.items():
        if _room(name) in ("codecs", "protocol", "errors", "settings", "stragglers", "corruption"):
            tree = ast.parse(path.read_text())
            top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import)
                   for a in n.names}  # fmt: skip
            top |= {n.module.split(".")[0] for n in tree.body
                    if isinstance(n, ast.ImportFrom) and n.module}  # fmt: skip
            assert not top & {"celery", "kombu", "redis", "torch"}, (name, top)


def _fresh_import(code: str) -> list[str]:
    probe = (
        f"{code}\nimport json, sys\n"
        "print(json.dumps(sorted(m for m in ('celery', 'kombu', 'torch', 'torchvision', "
        "'prometheus_client') if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    "code",
    [
        "import codedfarm",
        "from codedfarm import FarmClient, BatchSpec, BatchResult, BatchRecord, Settings,"
        " make_codec, Codec",
        "import codedfarm.protocol, codedfarm.codecs, codedfarm.coordinator, codedfarm.worker",
        "import codedfarm.cli",
    ],
)
def test_the_public_face_imports_neither_celery_nor_torch(code):
    assert _fresh_import(code) == []


def test_every_name_of_the_face_resolves():
    for name in codedfarm.__all__:
        assert getattr(codedfarm, name) is not None, name
    assert set(codedfarm.__all__) <= set(dir(codedfarm))
    assert isinstance(codedfarm.make_codec("berrut", 2, 4), codedfarm.Codec)
    with pytest.raises(AttributeError):
        _ = codedfarm.no_such_name  # type: ignore[attr-defined]


def test_the_readme_imports_only_the_face_and_the_face_has_what_it_uses():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "the README has Python examples"
    used: set[str] = set()
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("codedfarm"):
                assert node.module == "codedfarm", f"README imports {node.module}, not the face"
                used.update(a.name for a in node.names)
    assert used, "the README shows the face"
    assert used <= set(codedfarm.__all__), used - set(codedfarm.__all__)
    for name in ("FarmClient", "BatchSpec", "BatchResult", "Settings", "make_codec"):
        assert name in codedfarm.__all__


def test_the_version_has_one_source_and_types_ship():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    assert codedfarm.__version__ == importlib.metadata.version("codedfarm")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == "src/codedfarm/__init__.py"
    assert (PACKAGE / "py.typed").exists()


def test_modules_stay_small():
    big = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: c for n, c in big.items() if c > MAX_LINES} == {}


# ----- worker metrics are a plugin (monitoring.hooks.WorkerHooks) ------------------------
WORKER_FORBIDDEN = ("prometheus_client", "codedfarm.monitoring.worker_metrics")


def _module_level_imports(tree: ast.Module) -> set[str]:
    """Modules imported when the module runs (its body, class bodies, ``if``/``try``/``with``
    blocks), not inside functions nor under ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.If):
                if not _is_type_checking(node):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody):
                    visit(block)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, (ast.With, ast.ClassDef)):
                visit(node.body)

    visit(tree.body)
    return found


def test_no_worker_module_imports_prometheus_at_module_level():
    """prometheus_client must be imported after ``run_worker`` set its multiprocess dir:
    the engines call ``worker_hooks()`` and only launch.py imports the metrics, lazily."""
    worker_modules = {n: p for n, p in MODULES.items() if _room(n) == "worker"}
    assert "codedfarm.worker.batch_engine" in worker_modules
    wrong = {
        name: sorted(m for m in _module_level_imports(ast.parse(path.read_text()))
                     if any(m == f or m.startswith(f"{f}.") for f in WORKER_FORBIDDEN))
        for name, path in worker_modules.items()
    }  # fmt: skip
    assert {n: m for n, m in wrong.items() if m} == {}
    probe = ast.parse(
        "import prometheus_client\nif TYPE_CHECKING:\n    import x\n"
        "from codedfarm.monitoring import worker_metrics\ndef f():\n    import y"
    )
    assert _module_level_imports(probe) == {"prometheus_client", "codedfarm.monitoring",
                                            "codedfarm.monitoring.worker_metrics"}  # fmt: skip


@pytest.mark.parametrize(
    "code", ["import codedfarm.worker.batch_engine", "import codedfarm.worker.celery_engine"]
)
def test_the_engines_import_no_prometheus_client(code):
    assert "prometheus_client" not in _fresh_import(code)


# ----- one error tree, one error map, one resolution -------------------------------------
ERRORS_MODULE = "codedfarm.errors"
FACE_BESIDE_THE_ERRORS = {
    "BatchRecord",
    "BatchResult",
    "BatchSpec",
    "Codec",
    "FarmClient",
    "Settings",
    "__version__",
    "make_codec",
}


def _defines_exception(node: ast.ClassDef) -> bool:
    """A class whose bases name an exception or warning (``...Error``, ``...Exception``,
    ``...Warning``, or a class of the error tree)."""
    import codedfarm.errors as tree

    for base in node.bases:
        name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        if name.endswith(("Error", "Exception", "Warning")) or name in tree.__all__:
            return True
    return False


def test_every_exception_class_lives_in_errors_py():
    found = [
        f"{name}.{node.name}"
        for name, path in MODULES.items()
        if name != ERRORS_MODULE
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and _defines_exception(node)
    ]
    assert found == [], "exception classes outside errors.py: " + ", ".join(found)
    probe = ast.parse("class A(ValueError): ...\nclass B(CodedFarmError): ...\nclass C: ...")
    classes = [n for n in probe.body if isinstance(n, ast.ClassDef)]
    assert [_defines_exception(c) for c in classes] == [True, True, False]


def test_the_error_tree_is_drawn_whole_and_the_face_exports_exactly_it():
    """The docstring's tree names every class of errors.py; the face exports exactly the
    tree and the documented names (as httpx's test_exported_members)."""
    import codedfarm.errors as tree

    drawn = set(re.findall(r"^\s*(?:[│├└─\s]*)(\w+(?:Error|Warning|Failure))\b", tree.__doc__ or "",
                           re.M))  # fmt: skip
    classes = {n for n, v in vars(tree).items() if isinstance(v, type)
               and issubclass(v, BaseException) and v.__module__ == ERRORS_MODULE}  # fmt: skip
    assert drawn == classes == set(tree.__all__)
    assert set(codedfarm.__all__) == classes | FACE_BESIDE_THE_ERRORS
    assert "InputWarning" in codedfarm.__all__
    for name in classes:
        assert issubclass(getattr(tree, name), (tree.CodedFarmError, UserWarning)), name


def test_the_server_never_catches_value_error():
    """Status codes come from the error map (server/status.py): a bare ValueError from a
    library or a bug must become a 500, never a client's 400."""
    found = []
    for name, path in MODULES.items():
        if _room(name) != "server":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                types = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
                if any(getattr(t, "id", getattr(t, "attr", "")) == "ValueError" for t in types):
                    found.append(f"{name}:{node.lineno}")
    assert found == []


def test_only_the_resolver_reads_a_models_serving_block():
    """A model's config.json ``serving`` block is read in one place: the resolver (models/
    parses and writes it)."""
    readers = sorted(
        name
        for name, path in MODULES.items()
        if _room(name) != "models"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "serving"
    )
    assert set(readers) == {"codedfarm.coordinator.resolution"}, readers


def test_no_codec_name_is_branched_on_outside_the_codecs():
    """Codec facts (exactness, worker budgets, wait policies) come from the plan: nothing
    outside codecs/ compares a codec's name with a literal."""
    names = {"uncoded", "replication", "spline", "berrut", "mds", "lagrange", "letcc"}
    found = []
    for name, path in MODULES.items():
        if _room(name) == "codecs":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                parts = [node.left, *node.comparators]
                literals = {p.value for p in parts if isinstance(p, ast.Constant)}
                literals |= {e.value for p in parts if isinstance(p, (ast.Tuple, ast.Set))
                             for e in p.elts if isinstance(e, ast.Constant)}  # fmt: skip
                if literals & names:
                    found.append(f"{name}:{node.lineno}")
    assert found == []


def test_a_wrapped_library_error_keeps_its_cause():
    """``raise ... from None`` throws the library's error away: wrap with ``from exc``."""
    found = [
        f"{name}:{node.lineno}"
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Raise)
        and isinstance(node.cause, ast.Constant)
        and node.cause.value is None
    ]
    assert found == []
