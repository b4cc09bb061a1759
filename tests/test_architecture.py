"""The package's architecture, as issue 13 states it, checked on the source with `ast`.

Every check walks a package folder (every `*.py` below it, in folders that hold an
`__init__.py`), so modules added, split or moved are checked without editing this file; the
only thing named here per package is its layer (`LAYERS`). Each check is a plain function of
the package folder that returns its failures as text, run once on `tfjsbuild/` and once on a
small, deliberately bad package in `tmp_path`, so every check is shown to fail.

The rules:

- **TensorFlow lives behind one door.** TensorFlow, tensorflowjs, keras and tf_keras are
  imported only under `worker/`: no `import` of them anywhere else, not even inside a
  function, and importing every other module (in a fresh interpreter) loads none of them.
- **No import cycles** between the package's modules, counting every import: at module level,
  inside functions and under `TYPE_CHECKING` (a cycle that only type checking sees still
  means two modules that cannot be understood apart).
- **Data flows one way.** A module imports only from its own package and from lower layers.
  The layers, lowest first, and why each sits where it does:

      errors, version, files   shared vocabulary: the error root, the version, safe file I/O
      verify                   comparing TF with TF.js and finding the Node.js runtime
      manifest                 the manifest's typed values and its loader
      sources                  what each kind of source is made of, read without TensorFlow
      stores                   what builds leave for later ones: state, lock, cache, index owner
      planning                 targets, fingerprints, reasons, the plan: a pure function
      worker                   loads sources, converts, verifies: the only TensorFlow
      building                 runs a plan: the pool, the cache, outputs, the state
      render                   results in, text / JSON / HTML out
      api                      the public API, one function per verb
      watch                    a loop around the API
      cli                      parses arguments, calls the API or watch
      __init__, __main__       the package root and `python -m tfjsbuild`

  Issue 13's data flow is "manifest -> sources -> planning -> building (-> worker -> verify)
  -> state -> render". For the first four an arrow is an import the other way round:
  planning reads the manifest's and the sources' values, building reads the plan. The part in
  parentheses is a call, not a hand-over: building *dispatches* tasks to workers (it imports
  the task types, `worker/` must never import `building/`, because only the parent writes the
  state, the cache and the outputs), and a worker calls verify (as do building, to find the
  Node.js runtime, and planning, for the TF.js version in a fingerprint): verify is a leaf that
  knows nothing of manifests or plans, so it sits just above the base. The state and the cache
  are read by planning and written by building, so their records and stores (`stores/`) sit
  below planning; restoring from and saving to the cache is building's. render sits above
  building and reads its results. The package root re-exports the API, so nothing may import it (not
  even for `__version__`: that lives in the base layer).
- **Nothing after planning re-reads the manifest**: no module in `building/`, `worker/`,
  `verify/` or `render/` imports the manifest loader `manifest.load` (its types are fine).
- **Small pieces**: no module over 400 lines; no function or method over 60 lines
  (`end_lineno - lineno + 1`, decorators not counted).
- **No string-keyed dicts cross a package boundary**: no `dict[str, Any]`, `Mapping[str, Any]`,
  `dict[str, object]` (or an alias of one) in the annotations of what another package imports
  from a module: the functions, classes (their public methods and fields) and aliases it
  imports by name or reaches as `module.name`, and the classes defined beside them that those
  annotations name. JSON at the edge keeps its JSON type, and says so in its name: a function,
  method, field or alias whose name contains `json` or ends in `dict` (`results_json`,
  `parse_json`, `as_dict`, `JsonObject`) may use these types; nothing is allowed by listing
  names here.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tfjsbuild"

LAYERS: list[set[str]] = [
    {"errors", "version", "files"},
    {"verify"},
    {"manifest"},
    {"sources"},
    {"stores"},
    {"planning"},
    {"worker"},
    {"building"},
    {"render"},
    {"api"},
    {"watch"},
    {"cli"},
    {"__init__", "__main__"},
]
TENSORFLOW = ("tensorflow", "tensorflowjs", "keras", "tf_keras")
TENSORFLOW_PACKAGE = "worker"
AFTER_PLANNING = ("building", "worker", "verify", "render")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


# --- the walker ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. tfjsbuild.building.execute
    path: Path
    label: str  # the path shown in failures, e.g. tfjsbuild/building/execute.py
    tree: ast.Module
    line_count: int
    is_package: bool

    @property
    def package(self) -> str:
        """The top-level room it belongs to: `building`, `api`, or `__init__` for the root."""
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 else "__init__"


@dataclass(frozen=True)
class Import:
    importer: Module
    target: str  # a module of the package
    line: int
    names: tuple[str, ...]  # names taken from the target by `from target import ...`
    bound_as: str | None  # the local name of the module itself, when it is imported whole


def walk(root: Path) -> dict[str, Module]:
    """Every module of the package at `root`, by dotted name (links are not followed)."""
    modules: dict[str, Module] = {}
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        subfolders[:] = sorted(d for d in subfolders if (here / d / "__init__.py").is_file())
        for file in sorted(f for f in files if f.endswith(".py")):
            path = here / file
            parts = [root.name, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            text = path.read_text(encoding="utf-8")
            name = ".".join(parts)
            modules[name] = Module(
                name=name,
                path=path,
                label=str(path.relative_to(root.parent)),
                tree=ast.parse(text, filename=str(path)),
                line_count=len(text.splitlines()),
                is_package=file == "__init__.py",
            )
    return modules


def _known(name: str, modules: dict[str, Module]) -> str | None:
    """The longest prefix of `name` that is a module of the package."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def imports(module: Module, modules: dict[str, Module]) -> Iterator[Import]:
    """Every import of a package module, wherever it stands (functions, TYPE_CHECKING)."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name, modules)
                if target is not None:
                    bound = alias.asname or (alias.name if target == alias.name else None)
                    yield Import(module, target, node.lineno, (), bound)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.name.split(".")
                package = package if module.is_package else package[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    yield Import(module, submodule, node.lineno, (), alias.asname or alias.name)
                elif (target := _known(base, modules)) is not None:
                    yield Import(module, target, node.lineno, (alias.name,), None)


def _layer(package: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if package in layer), None)


# --- the checks: each returns its failures ------------------------------------------------


def tensorflow_import_statements(root: Path) -> list[str]:
    failures = []
    for module in walk(root).values():
        if module.package == TENSORFLOW_PACKAGE:
            continue
        for node in ast.walk(module.tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute | ast.Name)
                and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names = [str(node.args[0].value)]
            for name in names:
                if name.split(".")[0] in TENSORFLOW:
                    failures.append(
                        f"{module.label}:{node.lineno}: imports {name} "
                        f"(only {TENSORFLOW_PACKAGE}/ may)"
                    )
    return failures


_IMPORT_EACH = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
forbidden, culprits, errors = json.loads(sys.argv[2]), {}, {}
for name in json.loads(sys.argv[3]):
    try:
        importlib.import_module(name)
    except BaseException as error:
        errors[name] = f"{type(error).__name__}: {error}"
    for top in forbidden:
        if top in sys.modules and top not in culprits:
            culprits[top] = name
print(json.dumps({"culprits": culprits, "errors": errors}))
"""


def tensorflow_loaded_on_import(root: Path) -> list[str]:
    """Import every module outside worker/ (not __main__, which runs the CLI) in a fresh
    interpreter; name the first module after whose import each TensorFlow package was loaded."""
    names = [
        m.name
        for m in walk(root).values()
        if m.package not in (TENSORFLOW_PACKAGE, "__main__") and not m.name.endswith("__main__")
    ]
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            _IMPORT_EACH,
            str(root.parent),
            *map(json.dumps, [TENSORFLOW, names]),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout.splitlines()[-1])
    return [
        f"importing {name} loaded {top}" for top, name in sorted(answer["culprits"].items())
    ] + [f"importing {name} failed: {error}" for name, error in sorted(answer["errors"].items())]


def import_cycles(root: Path) -> list[str]:
    modules = walk(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    lines: dict[tuple[str, str], int] = {}
    for module in modules.values():
        for imp in imports(module, modules):
            if imp.target != module.name:
                graph[module.name].add(imp.target)
                lines.setdefault((module.name, imp.target), imp.line)
    failures = []
    for component in _strongly_connected(graph):
        cycle = _a_cycle(sorted(component)[0], component, graph)
        steps = [
            f"{modules[a].label}:{lines[a, b]} imports {b}" for a, b in itertools.pairwise(cycle)
        ]
        failures.append("import cycle: " + " -> ".join(cycle) + "\n    " + "\n    ".join(steps))
    return failures


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm; only components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

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
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _a_cycle(start: str, component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """The shortest path from `start` back to itself inside its component (breadth first)."""
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start}")


def layer_violations(root: Path) -> list[str]:
    modules = walk(root)
    failures = []
    for package in sorted({m.package for m in modules.values()}):
        if _layer(package) is None:
            failures.append(f"{package} has no layer: add it to LAYERS in {Path(__file__).name}")
    for module in modules.values():
        mine = _layer(module.package)
        for (target, line), _names in _grouped(imports(module, modules)).items():
            theirs = _layer(modules[target].package)
            if mine is not None and theirs is not None and theirs > mine:
                failures.append(
                    f"{module.label}:{line}: {module.package} imports {target}, "
                    f"a higher layer ({modules[target].package})"
                )
    return failures


def _grouped(found: Iterator[Import]) -> dict[tuple[str, int], list[str]]:
    """One entry per import statement and module: the names it takes from that module."""
    grouped: dict[tuple[str, int], list[str]] = {}
    for imp in found:
        grouped.setdefault((imp.target, imp.line), []).extend(imp.names)
    return grouped


def manifest_reread(root: Path) -> list[str]:
    modules = walk(root)
    loader = f"{root.name}.manifest.load"
    return [
        f"{module.label}:{line}: {module.package}/ comes after planning, yet imports "
        f"{', '.join(names) or 'the module'} from the manifest loader {loader}"
        for module in modules.values()
        if module.package in AFTER_PLANNING
        for (target, line), names in _grouped(imports(module, modules)).items()
        if target == loader
    ]


def long_modules(root: Path) -> list[str]:
    return [
        f"{m.label}: {m.line_count} lines (at most {MAX_MODULE_LINES})"
        for m in walk(root).values()
        if m.line_count > MAX_MODULE_LINES
    ]


def long_functions(root: Path) -> list[str]:
    failures = []
    for module in walk(root).values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    failures.append(
                        f"{module.label}:{node.lineno}: {node.name}() is {length} lines "
                        f"(at most {MAX_FUNCTION_LINES})"
                    )
    return failures


def string_keyed_dicts_across_packages(root: Path) -> list[str]:
    modules = walk(root)
    wanted: dict[str, set[str]] = {}  # module -> names other packages take from it
    for module in modules.values():
        for imp in imports(module, modules):
            if modules[imp.target].package == module.package:
                continue
            names = set(imp.names)
            if imp.bound_as is not None:
                names |= _attributes_of(imp.bound_as, module.tree)
            wanted.setdefault(imp.target, set()).update(names)
    # Follow what those annotations name into the modules that define it: `kind_of()` returns
    # a `SourceKind` defined elsewhere, and its methods cross the boundary with it.
    found: set[tuple[str, int, str]] = set()
    done: dict[str, set[str]] = {}
    while wanted:
        name, taken = wanted.popitem()
        taken -= done.setdefault(name, set())
        if not taken:
            continue
        done[name] |= taken
        followed: set[str] = set()
        found.update(_dict_annotations(modules[name], taken, followed))
        origins = _imported_names(modules[name], modules)
        for other in followed:
            if other in origins:
                wanted.setdefault(origins[other], set()).add(other)
    return [f"{label}:{line}: {what}" for label, line, what in sorted(found)]


def _imported_names(module: Module, modules: dict[str, Module]) -> dict[str, str]:
    """Local name -> the package module it was imported from (`from X import name`)."""
    return {name: imp.target for imp in imports(module, modules) for name in imp.names}


def _attributes_of(local: str, tree: ast.Module) -> set[str]:
    """The `x` of every `local.x` in the tree (`local` may be dotted: `tfjsbuild.api`)."""
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and ast.unparse(node.value) == local
    }


def _json_edge(name: str) -> bool:
    return "json" in name.lower() or name.lower().endswith("dict")


def _dict_annotations(
    module: Module, names: set[str], followed: set[str]
) -> Iterator[tuple[str, int, str]]:
    """Offending annotations of `names` (and of the classes of this module they name); every
    other name those annotations use goes into `followed`, for the caller to look up."""
    top: dict[str, ast.stmt] = {}
    for node in module.tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            top[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    top[target.id] = node
    aliases = {
        name
        for name, node in top.items()
        if isinstance(node, ast.Assign) and not _json_edge(name) and _bad(node.value, set())
    }
    todo, seen = sorted(names), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in top or name.startswith("_") or _json_edge(name):
            continue
        seen.add(name)
        for where, annotation in _annotations(name, top[name]):
            if _bad(annotation, aliases):
                yield module.label, annotation.lineno, f"{where}{ast.unparse(annotation)}"
            named = {n.id for n in ast.walk(annotation) if isinstance(n, ast.Name)}
            # A class defined here and named in the annotation crosses too.
            todo.extend(n for n in named if isinstance(top.get(n), ast.ClassDef))
            followed.update(n for n in named if n not in top)


def _annotations(name: str, node: ast.stmt) -> Iterator[tuple[str, ast.expr]]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        yield from _signature(name, node)
    elif isinstance(node, ast.ClassDef):
        for member in node.body:
            if isinstance(member, ast.AnnAssign) and isinstance(member.target, ast.Name):
                field = member.target.id
                if not field.startswith("_") and not _json_edge(field):
                    yield f"{name}.{field}: ", member.annotation
            elif isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
                public = not member.name.startswith("_") or member.name in ("__init__", "__call__")
                if public and not _json_edge(member.name):
                    yield from _signature(f"{name}.{member.name}", member)
    elif isinstance(node, ast.AnnAssign):
        yield f"{name}: ", node.annotation
    elif isinstance(node, ast.Assign):
        yield f"{name} = ", node.value


def _signature(
    name: str, node: ast.FunctionDef | ast.AsyncFunctionDef
) -> Iterator[tuple[str, ast.expr]]:
    args = node.args
    for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
        if arg is not None and arg.annotation is not None:
            yield f"{name}() takes {arg.arg}: ", arg.annotation
    if node.returns is not None:
        yield f"{name}() returns ", node.returns


def _bad(annotation: ast.expr, aliases: set[str]) -> bool:
    """Whether the annotation holds dict/Mapping[str, Any | object] or an alias of one."""
    for node in ast.walk(annotation):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                if _bad(ast.parse(node.value, mode="eval").body, aliases):
                    return True
            except SyntaxError:
                pass
        elif isinstance(node, ast.Name) and node.id in aliases:
            return True
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Tuple):
            container = ast.unparse(node.value).split(".")[-1]
            key, *rest = [ast.unparse(e).split(".")[-1] for e in node.slice.elts]
            mapping = container in ("dict", "Dict", "Mapping", "MutableMapping")
            if mapping and key == "str" and rest and rest[0] in ("Any", "object"):
                return True
    return False


# --- the real package --------------------------------------------------------------------

CHECKS = [
    tensorflow_import_statements,
    tensorflow_loaded_on_import,
    import_cycles,
    layer_violations,
    manifest_reread,
    long_modules,
    long_functions,
    string_keyed_dicts_across_packages,
]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_package(check: Callable[[Path], list[str]]) -> None:
    failures = check(PACKAGE)
    assert not failures, f"{len(failures)} found:\n" + "\n".join(failures)


def undocumented_modules(root: Path, doc: Path) -> list[str]:
    """Modules docs/architecture.md's package layout does not name: a newcomer reads the
    layout there, so a module added or renamed gets its line in the same change."""
    text = doc.read_text()
    return [
        f"{path.relative_to(root.parent)} is not named in {doc.name}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "__init__.py" and path.name not in text
    ]


def test_every_module_is_in_the_architecture_doc() -> None:
    doc = PACKAGE.parent / "docs" / "architecture.md"
    failures = undocumented_modules(PACKAGE, doc)
    assert not failures, "\n".join(failures)


def test_an_undocumented_module_fails(tmp_path: Path) -> None:
    package = make_package(tmp_path, {"a.py": "", "b.py": ""})
    doc = tmp_path / "architecture.md"
    doc.write_text("a.py  the one documented module")
    assert undocumented_modules(package, doc) == ["fakepkg/b.py is not named in architecture.md"]


# --- every check can fail: a small, bad package in tmp_path ------------------------------


def make_package(tmp_path: Path, files: dict[str, str], name: str = "fakepkg") -> Path:
    root = tmp_path / name
    for relative, text in files.items():
        path = root / relative
        for folder in [root, *path.relative_to(root).parents]:
            init = root / folder / "__init__.py"
            init.parent.mkdir(parents=True, exist_ok=True)
            if not init.exists():
                init.write_text('"""A fake package."""\n')
        path.write_text(textwrap.dedent(text))
    return root


def test_a_clean_package_passes(tmp_path: Path) -> None:
    root = make_package(
        tmp_path,
        {
            "errors.py": "class Error(Exception): ...\n",
            "manifest/types.py": "from dataclasses import dataclass\n"
            "@dataclass\nclass Manifest:\n    name: str\n",
            "manifest/load.py": "from fakepkg.manifest.types import Manifest\n"
            "def load() -> Manifest:\n    return Manifest('m')\n",
            "building/execute.py": "from typing import Any\n"
            "from fakepkg.manifest.types import Manifest\n"
            "from fakepkg.errors import Error\n"
            "def run(m: Manifest) -> None: ...\n",
            "render/json.py": "from typing import Any\n"
            "from fakepkg.building import execute\n"
            "def results_json() -> dict[str, Any]:\n    return {}\n",
            "api.py": "from fakepkg.render.json import results_json\n"
            "from fakepkg.manifest.load import load\n",
            "worker/convert.py": "def convert() -> None:\n    import tensorflow\n",
        },
    )
    for check in CHECKS:
        assert check(root) == [], check.__name__


def test_tensorflow_outside_worker_fails(tmp_path: Path) -> None:
    root = make_package(
        tmp_path,
        {
            "planning/plan.py": "def plan() -> None:\n    import tf_keras.models\n",
            "sources/keras.py": "import importlib\n"
            "def load() -> None:\n    importlib.import_module('keras')\n",
            "building/execute.py": "from tensorflow.python import framework\n",
            "worker/convert.py": "import tensorflow\n",
        },
    )
    # A stand-in `tensorflow` first on the path: the import check needs no real TensorFlow.
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text("")
    (tmp_path / "tensorflow" / "python.py").write_text("framework = None\n")
    assert tensorflow_import_statements(root) == [
        "fakepkg/building/execute.py:1: imports tensorflow.python (only worker/ may)",
        "fakepkg/planning/plan.py:2: imports tf_keras.models (only worker/ may)",
        "fakepkg/sources/keras.py:3: imports keras (only worker/ may)",
    ]
    assert tensorflow_loaded_on_import(root) == [
        "importing fakepkg.building.execute loaded tensorflow"
    ]


def test_an_import_cycle_fails(tmp_path: Path) -> None:
    root = make_package(
        tmp_path,
        {
            "manifest/load.py": "from fakepkg.manifest import types\n",
            "manifest/types.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from fakepkg.planning.plan import Plan\n",
            "planning/plan.py": "class Plan: ...\n"
            "def f() -> None:\n    from .. import manifest\n    from ..manifest.load import x\n",
        },
    )
    assert import_cycles(root) == [
        "import cycle: fakepkg.manifest.load -> fakepkg.manifest.types -> fakepkg.planning.plan"
        " -> fakepkg.manifest.load\n"
        "    fakepkg/manifest/load.py:1 imports fakepkg.manifest.types\n"
        "    fakepkg/manifest/types.py:3 imports fakepkg.planning.plan\n"
        "    fakepkg/planning/plan.py:4 imports fakepkg.manifest.load"
    ]


def test_an_import_against_the_flow_fails(tmp_path: Path) -> None:
    root = make_package(
        tmp_path,
        {
            "planning/plan.py": "from fakepkg.building.state import Record\n",
            "building/state.py": "import fakepkg.manifest.load\nRecord = int\n",
            "worker/task.py": "def run() -> None:\n    from fakepkg.building import state\n",
            "manifest/load.py": "from fakepkg import __version__\n",
            "render/html.py": "from fakepkg.manifest.load import load\n",
            "plugins/x.py": "",
        },
    )
    assert layer_violations(root) == [
        f"plugins has no layer: add it to LAYERS in {Path(__file__).name}",
        "fakepkg/manifest/load.py:1: manifest imports fakepkg, a higher layer (__init__)",
        "fakepkg/planning/plan.py:1: planning imports fakepkg.building.state, "
        "a higher layer (building)",
        "fakepkg/worker/task.py:2: worker imports fakepkg.building.state, a higher layer (building)",
    ]
    assert manifest_reread(root) == [
        "fakepkg/building/state.py:1: building/ comes after planning, yet imports the module "
        "from the manifest loader fakepkg.manifest.load",
        "fakepkg/render/html.py:1: render/ comes after planning, yet imports load "
        "from the manifest loader fakepkg.manifest.load",
    ]


def test_long_modules_and_functions_fail(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(59))
    root = make_package(
        tmp_path,
        {
            "short.py": f"@decorator\n@decorator\ndef fits():\n{body}",
            "long.py": f"def too_long():\n{body}    return x0\n"
            f"class C:\n    async def method(self):\n{textwrap.indent(body, '    ')}"
            "        return 1\n" + "\n" * 280,
        },
    )
    assert long_functions(root) == [
        "fakepkg/long.py:1: too_long() is 61 lines (at most 60)",
        "fakepkg/long.py:63: method() is 61 lines (at most 60)",
    ]
    assert long_modules(root) == ["fakepkg/long.py: 403 lines (at most 400)"]


def test_a_type_defined_elsewhere_crosses_with_the_function_returning_it(tmp_path: Path) -> None:
    root = make_package(
        tmp_path,
        {
            "sources/base.py": """\
                from typing import Any, Protocol
                class Kind(Protocol):
                    def fields(self) -> dict[str, Any]: ...
            """,
            "sources/registry.py": """\
                from fakepkg.sources.base import Kind
                def kind_of(name: str) -> Kind: ...
            """,
            "api.py": "from fakepkg.sources.registry import kind_of\n",
        },
    )
    assert string_keyed_dicts_across_packages(root) == [
        "fakepkg/sources/base.py:3: Kind.fields() returns dict[str, Any]"
    ]


def test_string_keyed_dicts_across_packages_fail(tmp_path: Path) -> None:
    root = make_package(
        tmp_path,
        {
            "building/results.py": """\
                from dataclasses import dataclass
                from typing import Any, Mapping
                Entry = dict[str, Any]
                @dataclass
                class Outcome:
                    parts: "Mapping[str, Any]"
                    note: str
                    def as_dict(self) -> dict[str, Any]: ...
                    def merged(self, other: dict[str, object]) -> None: ...
                    def _private(self) -> dict[str, Any]: ...
                @dataclass
                class Result:
                    outcome: Outcome | None
                    extra: list[Entry]
                def results(x: int) -> list[Result]: ...
                def results_json() -> dict[str, Any]: ...
                def internal() -> dict[str, Any]: ...
                def used_whole(counts: dict[str, int]) -> dict[str, Any]: ...
                JsonObject = dict[str, Any]
                @dataclass
                class Options:
                    metadata: JsonObject
                    def schema(self) -> JsonObject: ...
                def options() -> Options: ...
            """,
            "render/console.py": """\
                from fakepkg.building.results import results, results_json, options
                from fakepkg.building import results as r
                r.used_whole({})
            """,
        },
    )
    assert string_keyed_dicts_across_packages(root) == [
        "fakepkg/building/results.py:6: Outcome.parts: 'Mapping[str, Any]'",
        "fakepkg/building/results.py:9: Outcome.merged() takes other: dict[str, object]",
        "fakepkg/building/results.py:14: Result.extra: list[Entry]",
        "fakepkg/building/results.py:18: used_whole() returns dict[str, Any]",
    ]
