"""gsm8k_bench's imports run one way: no cycle, and no stage imports a later one.

Module-level, inside functions or for type checking only, an import is a dependency.  The stages are the
subpackages; each one's `__init__` docstring says which stages it may import (its `Imports:` line), and
these tests hold the code to what those docstrings say."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gsm8k_bench"


def module_names(package: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package is its __init__.py)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its file (every ast node, so imports in
    functions and under `if TYPE_CHECKING:` count too)."""
    modules = module_names(package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, one level up per extra dot
                    anchor = name.split(".")[:len(name.split(".")) - node.level + is_package]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, in a stable order)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph[module]):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_the_package_imports_without_cycles():
    graph = import_graph(PACKAGE)
    # The graph sees every kind of import: module level, inside a function, for type checking only.
    assert "gsm8k_bench.matrix.types" in graph["gsm8k_bench.matrix.loader"]
    assert "gsm8k_bench.serving.launchers.docker" in graph["gsm8k_bench.session.run"]
    assert "gsm8k_bench.matrix.types" in graph["gsm8k_bench.serving.frameworks.common"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_cycle_through_a_function_level_or_type_only_import_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg.sub import b\n")
    (package / "a.py").write_text("def f():\n    from pkg.sub.b import g\n    return g\n")
    (package / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                                          "    from .. import a\n")
    graph = import_graph(package)
    assert graph == {"pkg": set(), "pkg.sub": {"pkg.sub.b"}, "pkg.a": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.a"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    (package / "sub" / "b.py").write_text("import os\n\nimport pkg\n")
    assert find_cycle(import_graph(package)) is None


def allowed_imports(package: Path) -> dict[str, set[str]]:
    """Stage -> the stages its `__init__` docstring allows (its own included): the `Imports:` line, or
    `any stage`."""
    stages = sorted(p.name for p in package.iterdir() if (p / "__init__.py").is_file())
    allowed = {}
    for stage in stages:
        doc = ast.get_docstring(ast.parse((package / stage / "__init__.py").read_text(encoding="utf-8"))) or ""
        match = re.search(r"^Imports: (.+?)\.", doc, re.M | re.S)
        assert match, f"{package.name}/{stage}/__init__.py: no 'Imports:' line in its docstring"
        said = " ".join(match.group(1).split())
        allowed[stage] = set(stages) if said == "any stage" else set(re.findall(r"\w+", said)) & set(stages) | {stage}
    return allowed


def upward_imports(package: Path) -> list[str]:
    """Each import of a stage its docstring does not allow, as `module -> target`; a module outside every
    stage (but the package's face) is one too."""
    allowed = allowed_imports(package)
    found = []
    for module, targets in sorted(import_graph(package).items()):
        parts = module.split(".")
        if len(parts) == 1:
            continue  # the package's face: its version and docstring
        if parts[1] not in allowed:
            found.append(f"{module}: outside every stage")
            continue
        for target in sorted(targets):
            target_stage = target.split(".")[1] if "." in target else None
            if target_stage is not None and target_stage not in allowed[parts[1]]:
                found.append(f"{module} -> {target}")
    return found


def test_every_import_goes_down_the_stages():
    allowed = allowed_imports(PACKAGE)
    assert set(allowed) == {"core", "matrix", "serving", "evaluation", "verdicts", "reporting", "fleet", "session"}
    # The declared order is a chain: each stage may import exactly the ones before it.
    order = sorted(allowed, key=lambda stage: len(allowed[stage]))
    assert [len(allowed[stage]) for stage in order] == list(range(1, len(order) + 1))
    assert all(allowed[a] < allowed[b] for a, b in itertools.pairwise(order))
    assert order == ["core", "matrix", "serving", "evaluation", "verdicts", "reporting", "fleet", "session"]
    assert upward_imports(PACKAGE) == []


def test_the_scripts_run_in_lm_evals_environment_import_nothing_of_the_package():
    graph = import_graph(PACKAGE)
    for script in ("lm_eval_driver", "lm_eval_client"):
        assert graph[f"gsm8k_bench.evaluation.{script}"] == set()


def test_an_upward_import_is_found_also_inside_a_function(tmp_path):
    package = tmp_path / "pkg"
    for stage, imports in (("low", "nothing else of pkg"), ("high", "low")):
        (package / stage).mkdir(parents=True)
        (package / stage / "__init__.py").write_text(f'"""A stage.\n\nImports: {imports}.\n"""\n')
    (package / "__init__.py").write_text("")
    (package / "high" / "user.py").write_text("from pkg.low import base\n")
    (package / "low" / "base.py").write_text("def f():\n    return 1\n")
    assert upward_imports(package) == []
    (package / "low" / "base.py").write_text("def f():\n    from pkg.high import user\n    return user\n")
    assert upward_imports(package) == ["pkg.low.base -> pkg.high.user"]
    (package / "loose.py").write_text("")
    assert upward_imports(package) == ["pkg.loose: outside every stage", "pkg.low.base -> pkg.high.user"]
