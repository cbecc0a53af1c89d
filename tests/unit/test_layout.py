"""The import direction of ingest's packages (README, "Layout"), read from the source."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("edge", "pipeline", "delivery", "control")
# Which layers each layer may import at module level; the shared modules (models, records, state,
# ids) may be imported by all.
ALLOWED = {
    "edge": {"edge", "pipeline", "control"},
    "pipeline": {"pipeline", "control"},
    "delivery": {"delivery", "control"},
    "control": {"control"},
}
EXCEPTIONS = {
    # Dead-letter replay publishes through the web side's broker module.
    ("ingest.control.dead_letters", "ingest.pipeline.broker"),
}
# Modules Django imports while it configures logging (LOGGING's formatter, the middleware), before
# models can be imported; they import ingest.models inside functions.
LOGGING_TIME_MODULES = {"ingest.control.stats", "ingest.control.metrics"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def ingest_imports(path: Path) -> list[tuple[str, bool]]:
    """Return (imported module, at module level) for each import of an ingest module."""
    module = module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            names = [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("ingest."):
                found.append((name, node in tree.body))
    return found


MODULES = {
    module_name(path): path
    for path in (ROOT / "ingest").rglob("*.py")
    if "migrations" not in path.parts
}


def resolve(name: str) -> str:
    """Return the module an imported name lives in (ingest.control.keys for its SourceInfo)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


GRAPH = {
    module: {resolve(name) for name, top in ingest_imports(path) if top}
    for module, path in MODULES.items()
}


def test_no_import_cycles():
    done, path = set(), []

    def visit(module):
        if module in path:
            pytest.fail(f"import cycle: {' -> '.join(path[path.index(module) :] + [module])}")
        if module in done:
            return
        path.append(module)
        for imported in GRAPH.get(module, ()):
            visit(imported)
        path.pop()
        done.add(module)

    for module in GRAPH:
        visit(module)


def test_imports_go_one_way():
    wrong = []
    for module, imported in GRAPH.items():
        for target in imported:
            source_layer, target_layer = layer(module), layer(target)
            if target_layer is None or (module, target) in EXCEPTIONS:
                continue
            if source_layer is None:
                if target_layer == "edge" and module != "ingest.urls":
                    wrong.append(f"{module} -> {target}: only the URLs import the edge")
            elif target_layer not in ALLOWED[source_layer]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_function_level_import_but_models_at_logging_time():
    local = [
        f"{module} -> {resolve(name)}"
        for module, path in MODULES.items()
        for name, top in ingest_imports(path)
        if not top and not (module in LOGGING_TIME_MODULES and resolve(name) == "ingest.models")
    ]
    assert local == []
