"""The source kinds behind `tfjsbuild.sources.registry`: each one implements the protocol, and a
source of each kind answers the planner's, watch's and inspect's questions through it."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tfjsbuild.manifest.load import load_manifest
from tfjsbuild.manifest.types import SOURCE_KINDS
from tfjsbuild.sources.base import SourceEntry, SourceKind
from tfjsbuild.sources.digest import StatCache
from tfjsbuild.sources.model_sources import ModelSources
from tfjsbuild.sources.registry import KINDS, kind_of, source_digest
from tfjsbuild.sources.saved_model import list_signatures

PROTOCOL_METHODS = sorted(
    name for name, value in vars(SourceKind).items() if callable(value) and not name.startswith("_")
)


def test_the_protocol_is_what_the_kinds_are_asked() -> None:
    assert PROTOCOL_METHODS == [
        "digest",
        "incomplete",
        "inspect_heading",
        "inspect_json",
        "origin",
        "output_format",
        "problem",
        "signature_names",
        "signature_sources",
        "tags",
        "user_frame",
        "watch_paths",
    ]


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_implements_the_protocol(name: str) -> None:
    kind = KINDS[name]
    assert kind.name == name
    assert isinstance(kind.tool_distributions, tuple)
    for method in PROTOCOL_METHODS:
        wanted = inspect.signature(getattr(SourceKind, method))
        found = inspect.signature(getattr(type(kind), method))
        assert list(found.parameters) == list(wanted.parameters), (name, method)
        assert [p.kind for p in found.parameters.values()] == [
            p.kind for p in wanted.parameters.values()
        ], (name, method)


def test_the_registry_the_manifest_and_the_worker_name_the_same_kinds() -> None:
    from tfjsbuild.worker.loaders import LOADERS

    assert set(KINDS) == set(SOURCE_KINDS) == set(LOADERS)


def test_the_sources_package_imports_no_tensorflow() -> None:
    code = (
        "import sys\n"
        "import tfjsbuild.sources.registry, tfjsbuild.sources.model_sources\n"
        "print(sorted(m for m in ('tensorflow', 'tensorflowjs', 'keras', 'tf_keras') "
        "if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


MANIFEST = """\
version: 1
models:
  graph:
    saved_model: models/multihead
  heads:
    keras: models/heads.keras
  code:
    python: nets.small:build
    signatures: [predict]
"""


@pytest.fixture
def one_of_each(project: Callable[..., Path], model_store: Callable[..., Path]) -> Path:
    path = project(
        MANIFEST,
        {
            "models/multihead": model_store("multihead"),
            "models/heads.keras": model_store("keras_file"),
        },
    )
    (path.parent / "nets").mkdir()
    (path.parent / "nets" / "__init__.py").write_text("")
    (path.parent / "nets" / "small.py").write_text("def build(): ...\n")
    return path


def test_a_source_of_each_kind_round_trips_through_the_registry(one_of_each: Path) -> None:
    manifest = load_manifest(one_of_each)
    root = manifest.root
    sources = {model.name: model.source for model in manifest.models}
    graph, heads, code = sources["graph"], sources["heads"], sources["code"]
    assert [kind_of(s).name for s in (graph, heads, code)] == ["saved_model", "keras", "python"]

    for source in sources.values():
        kind = kind_of(source)
        assert kind.problem(source, root) is None
        assert kind.incomplete(source) is None
        assert source_digest(source, StatCache()) == source_digest(source, StatCache())

    assert kind_of(graph).signature_names(graph, list_signatures) == [
        "classify",
        "features",
        "regress",
    ]
    assert kind_of(heads).signature_names(heads, list_signatures) == ["serving_default"]
    assert kind_of(code).signature_names(code, list_signatures) is None  # the manifest's

    plan = ModelSources(StatCache(), {}, paranoid=False)
    assert {e.kind for e in plan.fingerprints(graph).values()} == {"graph"}
    assert sorted(plan.fingerprints(graph)) == ["classify", "features", "regress"]
    assert plan.fingerprints(heads) == {
        "*": SourceEntry(source_digest(heads, StatCache()), "keras-content", {})
    }
    assert plan.fingerprints(code)["*"].kind == "python-content"
    assert plan.signature_names(graph) == ["classify", "features", "regress"]
    assert len(plan.used) == 1  # the SavedModel's names and graphs, cached under its digest

    assert [kind_of(s).origin(s) for s in (graph, heads, code)] == [
        str(root / "models/multihead"),
        str(root / "models/heads.keras"),
        "nets.small:build",
    ]
    assert [kind_of(s).tags(s) for s in (graph, heads, code)] == [("serve",), (), ()]
    assert [kind_of(s).output_format(s) for s in (graph, heads, code)] == ["graph_model"] * 3
    assert kind_of(graph).watch_paths(graph).paths == (root / "models/multihead",)
    assert kind_of(code).watch_paths(code).paths == (
        root / "nets/small.py",
        root / "nets/small/__init__.py",
    )
    assert kind_of(heads).inspect_json(heads) == {
        "path": str(root / "models/heads.keras"),
        "container": "keras_v3",
    }
    assert kind_of(code).inspect_json(code) == {
        "python": "nets.small:build",
        "inputs": ["nets/small.py"],
    }
    assert kind_of(code).inspect_heading("nets.small:build", code) == (
        "Python source nets.small:build (inputs: nets/small.py)"
    )

    frames = [("/usr/lib/site-packages/tf/x.py", 3), (str(root / "nets/small.py"), 1)]
    assert kind_of(code).user_frame(code, frames) == " (at nets/small.py:1)"
    assert kind_of(graph).user_frame(graph, frames) == ""


def test_problems_come_from_the_kind_and_name_the_source(tmp_path: Path) -> None:
    (tmp_path / "tfjs-build.yaml").write_text(
        MANIFEST.replace("models/heads.keras", "models/gone.keras")
    )
    manifest = load_manifest(tmp_path / "tfjs-build.yaml")
    problems = {m.name: kind_of(m.source).problem(m.source, manifest.root) for m in manifest.models}
    root = manifest.root
    assert problems == {
        "graph": f"SavedModel folder {root / 'models/multihead'} does not exist (paths are "
        f"relative to {root}); export the model there or fix the path",
        "heads": f"Keras model {root / 'models/gone.keras'} does not exist (paths are relative "
        f"to {root}); save the model there or fix the path",
        "code": f"module 'nets.small' is not in {root} (looked for nets/small.py and "
        "nets/small/__init__.py); put it there, or list the files the model is built from in "
        "`inputs:`",
    }
