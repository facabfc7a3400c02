"""The package layout keeps its promises: few top-level modules, no import cycles, short modules."""

from __future__ import annotations

import ast
from pathlib import Path

import voicechat

PACKAGE = Path(voicechat.__file__).resolve().parent
MAX_TOP_LEVEL = 10
MAX_LINES = 450  # "about 400": a module past this is two concepts


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def runtime_imports(path: Path, known: set[str]) -> set[str]:
    """Project modules imported when ``path`` is imported: not inside functions or ``if TYPE_CHECKING``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            found.update(n for n in names if n in known)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``a -> b -> a``, or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_at_most_ten_modules_at_the_top():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top


def test_no_import_cycles():
    mods = modules()
    graph = {name: runtime_imports(path, set(mods)) - {name} for name, path in mods.items()}
    # importing a.b.c imports its packages a and a.b first
    for name in list(graph):
        graph[name] |= {p for p in (name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)) if p in mods}
        graph[name].discard(name)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_is_too_long():
    long = {name: n for name, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_model_weights_are_committed():
    """Real model files are fetched into models/, never committed (the tiny test models are the exception)."""
    import subprocess

    root = PACKAGE.parent
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=False)
    if listed.returncode != 0:  # not a git checkout (an installed package): nothing to check
        return
    big = [name for name in listed.stdout.decode().split("\0")
           if name and (root / name).is_file() and (root / name).stat().st_size > 5_000_000]
    assert big == [], "commit no model weights; the model manager fetches them into models/"
