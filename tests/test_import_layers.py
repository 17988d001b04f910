"""The house's import rules (docs/ARCHITECTURE.md, "The house"), checked on the source: no module imports one
that imports it back, and each layer imports only the layers below it.

Only module-level imports count (imports inside functions are deliberate late imports of heavy machinery,
and `if TYPE_CHECKING:` blocks are never executed)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "zerosearch"

# package -> packages of the project it may import at module level (itself is always allowed)
ALLOWED: dict[str, set[str]] = {
    "utils": set(),
    "config": {"utils"},
    "reward": {"utils", "config"},
    "algos": set(),
    "data": {"utils", "config"},
    "generation": {"utils"},
    "search": {"utils", "config", "generation"},
    "rollout": {"utils", "config", "generation", "search", "reward"},
    "testing": {"utils", "config", "generation"},
    "workers": {"utils", "config", "algos", "generation", "rollout"},
    "eval": {"utils", "config", "data", "reward", "generation", "search", "rollout"},
    "trainer": {"utils", "config", "data", "reward", "algos", "generation", "search", "rollout", "workers", "eval"},
    "simulator": {"utils", "config", "data", "generation", "search", "testing", "workers"},
    "toy": {"utils", "config", "data", "generation", "search", "rollout", "simulator", "testing", "trainer", "eval",
            "workers"},
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(path: Path) -> set[str]:
    """zerosearch modules imported at module level (including under try/if, excluding TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("zerosearch"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zerosearch"):
                out.add(node.module)
                out.update(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import module`
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for h in node.handlers:
                    visit(h.body)

    visit(tree.body)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in _top_level_imports(p) if i in files and i != m} for m, p in files.items()}


def test_no_module_imports_one_that_imports_it_back():
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                dfs(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_each_layer_imports_only_the_layers_below_it():
    problems = []
    for m, deps in _graph().items():
        parts = m.split(".")
        if len(parts) < 3:  # zerosearch/__init__, train.py, launch.py, run.py, infer.py sit on top
            continue
        layer = parts[1]
        allowed = ALLOWED.get(layer)
        assert allowed is not None, f"{m}: package {layer!r} has no rule in ALLOWED (add one)"
        for d in deps:
            dl = d.split(".")[1] if d.count(".") else ""
            if dl and dl != layer and dl not in allowed:
                problems.append(f"{m} imports {d}")
    assert problems == [], problems


def test_search_and_generation_know_no_ray_fsdp_or_trainer():
    for layer in ("search", "generation", "rollout", "reward", "data", "algos"):
        for p in (PKG / layer).rglob("*.py"):
            tree = ast.parse(p.read_text())
            names = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
            assert not {x for x in names if x and x.split(".")[0] == "ray"}, f"{p} imports ray at module level"
            assert not {x for x in names if x and "fsdp" in x}, f"{p} imports FSDP at module level"
