"""The package's import structure: each folder is one layer and every import points down.

Every `import` in `dva/` is read with `ast` (those inside functions and `if TYPE_CHECKING:` blocks too, relative ones
resolved), so a lazy import cannot hide an arrow. A failure lists each offending import as `file:line a -> b`.
The layers are LAYERS below; README's package map says what each package is.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Bottom to top. A module may import its own package and the packages of lower layers; different units of one layer
# never import each other unless SIDEWAYS allows it; the top layer may import anything.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("errors", ("dva.errors",)),
    ("base", ("dva.config", "dva.storage", "dva.crops", "dva.dlib_models", "dva.standins", "dva.precision",
              "dva.threads")),
    ("library", ("dva.diffusion", "dva.models", "dva.metrics", "dva.video", "dva.face")),
    ("front end", ("dva.editing", "dva.latents", "dva.frontend", "dva.samples")),
    ("job runtime", ("dva.runtime",)),
    ("jobs", ("dva.pipeline", "dva.train", "dva.evaluation", "dva.report")),
    ("entry points", ("dva.preflight", "dva.demo", "dva.cli", "dva.convert_reference")),
]
# Imports between different units of one layer that the design needs ("importer -> imported").
SIDEWAYS: dict[str, set[str]] = {
    # aligning a video (`dva.face.crop_video`: frames -> landmarks -> track -> quads, `dva face-crop`) decodes it
    "library": {"dva.face -> dva.video"},
    # video -> crops -> z codes, kept in the latent store
    "front end": {"dva.frontend -> dva.latents"},
}
JOBS_NOT_PIPELINE = ("dva.train", "dva.editing", "dva.evaluation", "dva.report")


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. "dva.face.track"
    target: str  # imported module, e.g. "dva.face.detection"
    file: str  # path of the importing file, relative to the package's parent folder
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.source} -> {self.target}"


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of `package` (a folder under `root`) by dotted name; a package is its `__init__.py`."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The longest prefix of the dotted `name` that is one of `modules` (an imported function or class names its
    module); for a module outside the package, its top-level name ("ray.data" -> "ray")."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return parts[0]


def imports(root: Path, package: str) -> list[Import]:
    """Every import in a module of `package`, wherever in the file it is written.

    Each names the most specific module of `package` it loads, or the top-level name of another package (`from dva.face import track` -> dva.face.track, `from dva.face
    import build_landmarker` -> dva.face). The `__init__` of the packages above it, which Python also runs, is not
    counted: otherwise every module would form a circle with its own package's `__init__`."""
    modules = module_files(root, package)
    found = []
    for source, path in modules.items():
        is_package = path.name == "__init__.py"
        file = str(path.relative_to(root))
        for node in ast.walk(ast.parse(path.read_text(), filename=file)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = source.split(".")[: len(source.split(".")) - node.level + is_package]
                    base = ".".join(anchor + ([base] if base else []))
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in dict.fromkeys(_resolve(name, modules) for name in names):
                found.append(Import(source, target, file, node.lineno))
    return found


def _unit(module: str) -> str:
    """The top-level package or module of the package that `module` belongs to: "dva.face.track" -> "dva.face"."""
    return ".".join(module.split(".")[:2])


def _layer_of(module: str, layers) -> int | None:
    unit = _unit(module)
    return next((rank for rank, (_, units) in enumerate(layers) if unit in units), None)


def unlayered(root: Path, package: str, layers=LAYERS) -> list[str]:
    """Top-level modules and packages that no layer lists (a new one must be placed in LAYERS and the README)."""
    units = {_unit(m) for m in module_files(root, package) if m != package}
    return sorted(u for u in units if _layer_of(u, layers) is None)


def layer_violations(found: list[Import], layers=LAYERS, sideways=SIDEWAYS) -> list[str]:
    """Imports that point up a layer, or sideways between units of one layer that SIDEWAYS does not allow."""
    bad = []
    top = len(layers) - 1
    for imp in found:
        source_unit, target_unit = _unit(imp.source), _unit(imp.target)
        src, dst = _layer_of(imp.source, layers), _layer_of(imp.target, layers)
        if source_unit == target_unit or src is None or dst is None or src == top or dst < src:
            continue
        if dst > src:
            bad.append(f"{imp}  ({layers[src][0]} imports {layers[dst][0]}, a higher layer)")
            continue
        if f"{source_unit} -> {target_unit}" not in sideways.get(layers[src][0], set()):
            bad.append(f"{imp}  ({source_unit} and {target_unit} are both in layer '{layers[src][0]}')")
    return bad


def forbidden(found: list[Import], sources: tuple[str, ...], target: str) -> list[str]:
    """Imports of `target` (or a module in it) by a module in one of the `sources` packages."""
    def inside(module: str, package: str) -> bool:
        return module == package or module.startswith(package + ".")

    return [str(imp) for imp in found
            if any(inside(imp.source, s) for s in sources) and inside(imp.target, target)]


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def _cycle_through(start: str, members: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path start -> ... -> start inside one component (breadth-first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{start} is in a component without a cycle through it")


def cycles(found: list[Import]) -> list[str]:
    """One description per import circle between files: its members and one cycle, each arrow with file:line."""
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], Import] = {}
    for imp in found:
        graph.setdefault(imp.source, set()).add(imp.target)
        graph.setdefault(imp.target, set())
        where.setdefault((imp.source, imp.target), imp)
    circles = []
    for component in sorted(_components(graph)):
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue
        path = _cycle_through(component[0], set(component), graph)
        arrows = "\n".join(f"    {where[a, b]}" for a, b in zip(path, path[1:]))
        circles.append(f"circle of {len(component)} module(s): {', '.join(component)}\n{arrows}")
    return circles


def _fail_on(problems: list[str], what: str, fix: str) -> None:
    if problems:
        pytest.fail(f"{len(problems)} {what}; {fix}:\n" + "\n".join(f"  {p}" for p in problems), pytrace=False)


# ------------------------------------------------------------------------------------------------ the rules on dva/


@pytest.fixture(scope="module")
def dva_imports() -> list[Import]:
    return imports(ROOT, "dva")


def test_every_top_level_module_has_a_layer():
    _fail_on(unlayered(ROOT, "dva"), "modules or packages under dva/ in no layer",
             "add each to LAYERS in tests/unit/test_layers.py and to README's package map")


def test_train_editing_evaluation_and_report_never_import_the_edit_job(dva_imports):
    _fail_on(forbidden(dva_imports, JOBS_NOT_PIPELINE, "dva.pipeline"), "imports of dva.pipeline",
             "move what they share with the edit job to dva/runtime/ or a library package")


def test_models_never_import_storage(dva_imports):
    _fail_on(forbidden(dva_imports, ("dva.models",), "dva.storage"), "imports of dva.storage in dva/models",
             "models take tensors, state dicts and local files: resolve URIs in the caller (dva.runtime)")


def test_only_dlib_models_imports_the_optional_dlib_package(dva_imports):
    bad = [str(imp) for imp in dva_imports if imp.target == "dlib" and imp.source != "dva.dlib_models"]
    _fail_on(bad, "imports of dlib outside dva.dlib_models", "call dva.dlib_models.import_dlib(config_key, choice) "
             "when the dlib option is built, so everything else runs without the [dlib] extra")


def test_nothing_below_the_job_runtime_imports_ray(dva_imports):
    runtime = next(rank for rank, (name, _) in enumerate(LAYERS) if name == "job runtime")
    below = tuple(unit for _, units in LAYERS[:runtime] for unit in units)
    _fail_on(forbidden(dva_imports, below, "ray"), "imports of Ray below dva.runtime",
             "the library runs unchanged inside Ray actors: start Ray and build pools in dva.runtime or a job")


def test_no_import_circle_between_files(dva_imports):
    _fail_on(cycles(dva_imports), "import circles", "move what both sides need into a module that imports neither")


def test_imports_point_down_the_layers(dva_imports):
    order = " < ".join(name for name, _ in LAYERS)
    _fail_on(layer_violations(dva_imports), "imports against the layer order",
             f"the layers are {order} (tests/unit/test_layers.py); move the imported code down or the importer up")


# ------------------------------------------------------------------------------- the checks catch what they should


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


TOY_LAYERS = [("low", ("pkg.base", "pkg.other")), ("mid", ("pkg.lib", "pkg.lib2")), ("top", ("pkg.main",))]


def test_imports_are_found_in_functions_type_checking_blocks_and_relative_forms(tmp_path):
    root = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/base.py": "",
        "pkg/lib/__init__.py": "from .core import thing\n",
        "pkg/lib/core.py": """\
            from typing import TYPE_CHECKING
            import os
            from .. import base
            if TYPE_CHECKING:
                from pkg.lib2 import Other
            def later():
                import pkg.main.run
                from . import helper
            """,
        "pkg/lib/helper.py": "",
        "pkg/lib2.py": "",
        "pkg/main/__init__.py": "",
        "pkg/main/run.py": "",
    })
    found = {(i.source, i.target, i.line) for i in imports(root, "pkg")}
    assert found == {
        ("pkg.lib", "pkg.lib.core", 1),
        ("pkg.lib.core", "typing", 1),
        ("pkg.lib.core", "os", 2),
        ("pkg.lib.core", "pkg.base", 3),
        ("pkg.lib.core", "pkg.lib2", 5),
        ("pkg.lib.core", "pkg.main.run", 7),
        ("pkg.lib.core", "pkg.lib.helper", 8),
    }


def test_a_circle_is_reported_with_each_arrow_and_its_line(tmp_path):
    root = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\n",
        "pkg/b.py": "x = 1\ndef f():\n    from pkg import c\n",
        "pkg/c.py": "from pkg.a import thing\n",
        "pkg/d.py": "import pkg.a\nimport pkg.d\n",
    })
    found = cycles(imports(root, "pkg"))
    assert len(found) == 2
    assert found[0].startswith("circle of 3 module(s): pkg.a, pkg.b, pkg.c")
    assert "pkg/a.py:1 pkg.a -> pkg.b" in found[0]
    assert "pkg/b.py:3 pkg.b -> pkg.c" in found[0]
    assert "pkg/c.py:1 pkg.c -> pkg.a" in found[0]
    assert found[1] == "circle of 1 module(s): pkg.d\n    pkg/d.py:2 pkg.d -> pkg.d"


def test_upward_sideways_and_forbidden_imports_are_reported(tmp_path):
    root = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/base.py": "def f():\n    from pkg.lib import x\n",  # up
        "pkg/other.py": "import pkg.base\nimport ray.data\n",  # sideways in 'low': allowed below
        "pkg/lib/__init__.py": "from pkg import lib2\nfrom pkg.base import y\n",  # sideways in 'mid'; down
        "pkg/lib2.py": "",
        "pkg/main/__init__.py": "import pkg.lib\nimport pkg.other\n",  # top imports anything
        "pkg/stray.py": "",
    })
    found = imports(root, "pkg")
    bad = layer_violations(found, TOY_LAYERS, {"low": {"pkg.other -> pkg.base"}})
    assert bad == [
        "pkg/base.py:2 pkg.base -> pkg.lib  (low imports mid, a higher layer)",
        "pkg/lib/__init__.py:1 pkg.lib -> pkg.lib2  (pkg.lib and pkg.lib2 are both in layer 'mid')",
    ]
    assert forbidden(found, ("pkg.lib",), "pkg.base") == ["pkg/lib/__init__.py:2 pkg.lib -> pkg.base"]
    assert forbidden(found, ("pkg.base", "pkg.other"), "ray") == ["pkg/other.py:2 pkg.other -> ray"]
    assert unlayered(root, "pkg", TOY_LAYERS) == ["pkg.stray"]


def test_clean_package_passes_every_check(tmp_path):
    root = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/base.py": "",
        "pkg/lib/__init__.py": "from pkg.lib.core import x\n",
        "pkg/lib/core.py": "from pkg.base import y\n",
        "pkg/main/__init__.py": "from pkg import lib\n",
    })
    found = imports(root, "pkg")
    assert cycles(found) == [] and layer_violations(found, TOY_LAYERS) == [] and unlayered(root, "pkg", TOY_LAYERS) == []
