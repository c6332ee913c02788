"""The package's import graph is layered and has no cycle but the registry's, read from the source (``ast``).

Every ``import`` and ``from ... import`` of a soundtok module counts, at module level or inside a function, except
those under ``if TYPE_CHECKING:`` (annotations only, never executed). ``from soundtok import __version__`` is not an
edge to the package's ``__init__``: the version is bound there before anything is imported.

* **Registration** is the one allowed cycle: the registry imports the modules that register themselves in it, in
  its ``_import_*`` functions, and they import the registry. Those back-edges must point at modules that do register
  (import :mod:`soundtok.registry`), and every other edge must leave the graph acyclic.
* **Layers**: a module may import its own layer and the layers below, never above (:data:`LAYERS`). A new module
  belongs to the layer of its longest listed package prefix; one outside every listed prefix fails the test.
* **Test fixtures** (:mod:`soundtok.testing`) are imported by nothing in the library; the clips that library code
  reads live in :mod:`soundtok.fixtures`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "soundtok"

#: lowest first; a module may import its own layer and those below. Names are modules or packages (a package
#: covers its submodules unless one is listed in another layer); "soundtok" is only the package's __init__.
LAYERS: list[tuple[str, set[str]]] = [
    (
        "foundations",  # plain Python and torch: errors, configs, the shape legend, files, caches, processes, logs
        {
            "soundtok.errors",
            "soundtok.config",
            "soundtok.types",
            "soundtok.fileio",
            "soundtok.cache",
            "soundtok.launch",
            "soundtok.logs",
        },
    ),
    (
        "signals, data and building blocks",  # audio I/O and the log-mel, nn blocks, token files, manifests
        {
            "soundtok.audio",
            "soundtok.nn",
            "soundtok.tokenfile",
            "soundtok.fixtures",
            "soundtok.corpus",  # manifests, loaders, samplers (corpus.tokenize is an application)
        },
    ),
    (
        "model plumbing",  # checkpoint folders, the registry, the tokenizer contract, the public facade
        {"soundtok.checkpoint", "soundtok.registry", "soundtok.tokenizers.base", "soundtok"},
    ),
    (
        "models",  # every registered kind, and the frozen encoders and autoencoders they are built on
        {"soundtok.tokenizers", "soundtok.vocoder", "soundtok.latent", "soundtok.encoders"},
    ),
    (
        "token data and measurement",  # token stores, corpus tokenization, metrics, probes
        {"soundtok.store", "soundtok.corpus.tokenize", "soundtok.eval", "soundtok.probes"},
    ),
    (
        "applications",  # training, LLMs, in-context learning, the benchmark suite
        {"soundtok.train", "soundtok.llm", "soundtok.icl", "soundtok.bench"},
    ),
    ("command line", {"soundtok.cli"}),
    ("test fixtures", {"soundtok.testing"}),
]

#: edges that break the rules today, each with the change that removes it
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    function: str | None  # the enclosing function, None at module level


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = module_names()


def _resolve(name: str) -> str | None:
    """The soundtok module ``name`` refers to: itself, or its longest prefix that is a module."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.edges: list[Edge] = []
        self.function: list[str] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.function.append(node.name)
        self.generic_visit(node)
        self.function.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for child in node.orelse:  # the else branch runs
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(_resolve(alias.name), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.module.split(".") if self.is_package else self.module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, *([node.module] if node.module else [])])
        if base == "soundtok" and all(alias.name == "__version__" for alias in node.names):
            return  # bound in soundtok/__init__.py before it imports anything
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in MODULES else _resolve(base), node)

    def _add(self, target: str | None, node: ast.stmt) -> None:
        if target is not None and target != self.module:
            function = self.function[-1] if self.function else None
            self.edges.append(Edge(self.module, target, node.lineno, function))


def collect_edges() -> list[Edge]:
    edges = []
    for module, path in MODULES.items():
        collector = _Collector(module, path.name == "__init__.py")
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        edges.extend(collector.edges)
    return edges


EDGES = collect_edges()


def is_registration(edge: Edge) -> bool:
    return edge.source == "soundtok.registry" and (edge.function or "").startswith("_import_")


def layer_of(module: str) -> int:
    best, best_length = -1, -1
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            matches = module == name or (name != "soundtok" and module.startswith(name + "."))
            if matches and len(name) > best_length:
                best, best_length = index, len(name)
    return best


def checked_edges() -> list[Edge]:
    """Every edge the rules apply to: all but the registration back-edges and the known exceptions."""
    return [e for e in EDGES if not is_registration(e) and (e.source, e.target) not in KNOWN_EXCEPTIONS]


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in edges:
        graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read() -> None:
    assert {"soundtok.registry", "soundtok.tokenizers.msn", "soundtok.cli.main"} <= set(MODULES)
    targets = {(e.source, e.target) for e in EDGES}
    assert ("soundtok.tokenizers.msn", "soundtok.registry") in targets  # module level
    assert ("soundtok.registry", "soundtok.tokenizers") in targets  # inside _import_models
    assert ("soundtok.registry", "soundtok.train.loop") not in targets  # under TYPE_CHECKING only


def test_every_module_has_a_layer() -> None:
    missing = sorted(m for m in MODULES if layer_of(m) < 0)
    assert not missing, f"add these modules to a layer of tests/test_imports.py: {missing}"


def test_no_cycle_but_registration() -> None:
    found = cycles(checked_edges())
    assert not found, "import cycles (move the shared code down a layer, or register through soundtok.registry):\n" + (
        "\n".join(" <-> ".join(c) for c in found)
    )


def test_registration_back_edges_point_at_registering_modules() -> None:
    imports_registry = {e.source for e in EDGES if e.target == "soundtok.registry"}
    back = [e for e in EDGES if is_registration(e)]
    assert back, "the registry imports its self-registering modules in _import_* functions"
    for edge in back:
        registering = {m for m in imports_registry if m == edge.target or m.startswith(edge.target + ".")}
        assert registering, f"registry.{edge.function} imports {edge.target}, which registers nothing"


def test_layers() -> None:
    upward = [
        f"{e.source} ({LAYERS[layer_of(e.source)][0]}) imports {e.target} ({LAYERS[layer_of(e.target)][0]}), "
        f"line {e.line}"
        for e in checked_edges()
        if layer_of(e.target) > layer_of(e.source)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_library_modules_do_not_import_the_test_fixtures() -> None:
    offenders = [
        f"{e.source}:{e.line}"
        for e in EDGES
        if (e.target == "soundtok.testing" or e.target.startswith("soundtok.testing."))
        and not e.source.startswith("soundtok.testing")
    ]
    assert not offenders, f"library code imports soundtok.testing (use soundtok.fixtures): {offenders}"


def test_known_exceptions_are_still_needed() -> None:
    present = {(e.source, e.target) for e in EDGES}
    stale = sorted(set(KNOWN_EXCEPTIONS) - present)
    assert not stale, f"remove these from KNOWN_EXCEPTIONS, the imports are gone: {stale}"
