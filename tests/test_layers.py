"""The import graph of searchgym/, read with `ast` (no module is imported): imports go down the layers of
docs/architecture.md ("The layers": `LAYERS` here, with the same exceptions, `ALLOWED_UP`), util imports nothing
else of searchgym, worlds and envs meet only through the world registry, config never imports train, and no
import circle.

Every ``import searchgym.x`` and ``from searchgym.x import y`` counts, at the top of a file or inside a function
(``from . import`` is not used in the package). ``from searchgym.pkg import name`` is an edge to
``searchgym.pkg.name`` when that is a module, else to ``searchgym.pkg``. Circles are sought among module-level
imports only: an import inside a function runs when the function is called, after every module has loaded, so
it cannot see a half-initialised module; that is the one way a lower layer may reach a higher one at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "searchgym"

# Module-level circles allowed for now, each with why (and in docs/architecture.md): none.
ALLOWED_CIRCLES: dict[frozenset[str], str] = {}

# The layers, bottom first, as in docs/architecture.md's table: a module imports its own layer and those below
# it. A name covers that module or package and everything under it; the longest name that matches decides.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("util", ("searchgym.util", "searchgym.paths", "searchgym.quiet")),
    ("corpus", ("searchgym.corpus",)),
    ("tasks", ("searchgym.tasks", "searchgym.trajectory")),
    ("worlds", ("searchgym.worlds",)),
    ("envs", ("searchgym.envs", "searchgym.testing", "searchgym")),  # `import searchgym` registers the env ids
    ("agent side", ("searchgym.agent",)),
    ("config", ("searchgym.config",)),
    ("train", ("searchgym.runs", "searchgym.train")),
    ("meters", ("searchgym.meters",)),
    ("study / report", ("searchgym.study", "searchgym.report", "searchgym.calibration")),
    ("cli, service", ("searchgym.cli", "searchgym.serve", "searchgym.__main__")),
]
# Imports that reach a higher layer, importer -> imported (module or package), each with why; the same list is in
# docs/architecture.md. "in a function": only inside a function body.
ALLOWED_UP: dict[tuple[str, str], str] = {
    ("searchgym.agent.demos", "searchgym.meters"): "the demo sets' strategy entropy (meters are pure)",
    ("searchgym.config.recipe_checks", "searchgym.meters"): "in a function: meters.alarms rows must name a meter's key",
    ("searchgym.train.evaluate", "searchgym.meters"): "the eval summary",
    ("searchgym.train.probes", "searchgym.meters"): "live probes and alarms during training",
    ("searchgym.train.priors", "searchgym.meters"): "in a function: the shipped prior's measured strategy mix",
    ("searchgym.train.pipeline", "searchgym.report"): "in a function: the run's report drawn at the end",
    ("searchgym.testing.__main__", "searchgym.cli"): "python -m searchgym.testing (the fuzzer's old name) runs the CLI",
}


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package is its __init__.py)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported searchgym module, at module level?) for every import statement of one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in _top_level(tree.body)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import searchgym.a.b` of a name that is not a module: its package
                name = name.rpartition(".")[0]
            if name.startswith("searchgym"):
                out.append((name, id(node) in top))
    return out


def _top_level(body):
    """The statements that run on import: the module body, and the bodies of its top-level if/try blocks
    (``if TYPE_CHECKING:`` is not run, so it does not count)."""
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        yield node
        if isinstance(node, ast.If | ast.Try):
            for block in (node.body, node.orelse, getattr(node, "finalbody", []),
                          *[h.body for h in getattr(node, "handlers", [])]):
                yield from _top_level(block)


def graph(module_level_only: bool) -> dict[str, set[str]]:
    """Importer -> imported modules. For module-level imports, also the imported module's packages (importing
    ``searchgym.a.b`` first runs ``searchgym/a/__init__.py``), except the importer's own, which are loading
    already; the root package is left out (every module is under it)."""
    mods = modules()
    edges = {}
    for m, path in mods.items():
        targets = {t for t, top in imports(path, set(mods)) if t != m and (top or not module_level_only)}
        if module_level_only:
            own = {m.rsplit(".", i)[0] for i in range(m.count(".") + 1)}
            targets |= {p for t in targets for p in _packages(t) if p not in own}
        edges[m] = targets
    return edges


def _packages(module: str) -> list[str]:
    """``searchgym.a.b.c`` -> [``searchgym.a``, ``searchgym.a.b``]."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def circles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(root):
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(frozenset(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return out


def test_the_graph_is_read():
    edges, top = graph(module_level_only=False), graph(module_level_only=True)
    assert "searchgym.config.agent_recipe" in top["searchgym.train.stages"]  # `from searchgym.config.agent_recipe import …`
    assert "searchgym.train.pipeline" in top["searchgym.train"]  # the package front's `from … import`
    assert "searchgym.envs.search_env" in edges["searchgym.config.recipe_checks"]  # an import inside a function ...
    assert "searchgym.envs.search_env" not in top["searchgym.config.recipe_checks"]  # ... is not a module-level one
    assert "searchgym.agent" in top["searchgym.train.sft"]  # the package that `searchgym.agent.demos` runs first
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def _layer(module: str) -> int:
    found = [(len(name), i) for i, (_, names) in enumerate(LAYERS) for name in names
             if module == name or module.startswith(name + ".")]
    assert found, f"{module} is in no layer: add it to LAYERS and to docs/architecture.md's table"
    return max(found)[1]


def _allowed(importer: str, imported: str) -> str | None:
    return next((key for key in ALLOWED_UP if key[0] == importer
                 and (imported == key[1] or imported.startswith(key[1] + "."))), None)


def test_imports_go_down_the_layers():
    """Every import, at the top of a file or inside a function, reaches the importer's layer or one below it,
    except the listed ones; a listed exception that no longer exists fails too (remove it here and in docs)."""
    edges, used, wrong = graph(module_level_only=False), set(), []
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            if _layer(target) > _layer(module):
                key = _allowed(module, target)
                if key is None:
                    wrong.append(f"{module} ({LAYERS[_layer(module)][0]}) -> {target} ({LAYERS[_layer(target)][0]})")
                used.add(key)
    assert not wrong, "imports up the layers:\n" + "\n".join(wrong)
    stale = sorted(set(ALLOWED_UP) - used)
    assert not stale, f"allowed exceptions that no longer exist (remove them here and in docs): {stale}"


def test_util_imports_nothing_else_of_searchgym():
    """The bottom: every layer may use util (files, text, config_schema), so util uses no layer; util's modules
    use each other at most, and the root's `paths` and `quiet` use nothing of searchgym."""
    wrong = sorted((m, t) for m, targets in graph(module_level_only=False).items() if _layer(m) == 0
                   for t in targets if not (m.startswith("searchgym.util.") and t.startswith("searchgym.util.")))
    assert not wrong, f"the bottom layer imports searchgym: {wrong}"


def test_worlds_and_envs_meet_only_through_the_world_registry():
    """A world never imports envs (it answers what an env asks: corpus, tasks, strategies), and envs reach the
    worlds only through the registry (`searchgym.worlds`: world names -> classes), never a world's own modules."""
    edges = graph(module_level_only=False)
    up = sorted((m, t) for m, targets in edges.items() if m.startswith("searchgym.worlds")
                for t in targets if t == "searchgym.envs" or t.startswith("searchgym.envs."))
    assert not up, f"worlds import envs: {up}"
    down = sorted((m, t) for m, targets in edges.items() if _layer(m) == _layer("searchgym.envs")
                  for t in targets if t.startswith("searchgym.worlds."))
    assert not down, f"envs import a world's own modules (use the registry, searchgym.worlds): {down}"


def test_config_never_imports_train():
    """The stages are train's; config is below it and gets the registry passed in (`config.recipe_checks.validate_recipe`)."""
    wrong = sorted((m, t) for m, targets in graph(module_level_only=False).items() if m.startswith("searchgym.config")
                   for t in targets if t == "searchgym.train" or t.startswith("searchgym.train."))
    assert not wrong, f"config imports train: {wrong}"


def test_no_module_level_import_circle():
    found = circles(graph(module_level_only=True))
    unexplained = [sorted(c) for c in found if c not in ALLOWED_CIRCLES]
    assert not unexplained, f"module-level import circles: {unexplained}"
    stale = [sorted(c) for c in ALLOWED_CIRCLES if c not in found]
    assert not stale, f"allowed circles that no longer exist (remove them here and in docs): {stale}"


def test_no_import_circle_even_through_imports_inside_functions():
    """A function-level import that reaches back is still a circle in the design (config.recipe <-> checks, now
    config.agent_recipe and config.recipe_checks, and cli <-> testing.fuzzing were): only the import's timing differed."""
    found = [sorted(c) for c in circles(graph(module_level_only=False))]
    assert not found, f"import circles (function-level imports counted): {found}"


def test_no_module_imports_a_sibling_through_its_own_package_front():
    """``from searchgym.a import sibling`` inside ``searchgym/a/`` names the package, whose ``__init__`` may import
    the importer again (worlds.synthetic's world, entities and strategies reached each other that way through the
    front that re-exports SyntheticWorld): import the sibling by its own path instead."""
    found = []
    for m, path in modules().items():
        own = m.rsplit(".", 1)[0] if not path.name == "__init__.py" else None
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and own and node.module == own:
                found.append(f"{m}: from {own} import {', '.join(a.name for a in node.names)}")
    assert not found, f"imports through the module's own package front: {found}"


def test_loading_a_recipe_imports_nothing_heavy():
    """Every stage's checks run when any recipe loads (docs/architecture.md, "A new training stage"), so the
    modules the stage rows name for them must stay light: no torch, transformers, TRL, PEFT or datasets."""
    code = ("import sys, pathlib\n"
            "from searchgym.train.stages import load_recipe\n"
            "for f in sorted(pathlib.Path('agents').glob('*.toml')):\n"
            "    if 'study' not in f.name:\n"
            "        load_recipe(f, check_model=False)\n"
            "print([m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT.parent, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
