from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tfjsbuild.sources.saved_model_files import SavedModelError, find_meta_graph, read_meta_graphs


def test_signatures_are_read_without_tensorflow(model_store: Callable[..., Path]) -> None:
    (meta,) = read_meta_graphs(model_store("multihead"))
    assert meta.tags == ("serve",)
    assert meta.signature_names() == ["classify", "features", "regress"]
    classify = next(s for s in meta.signatures if s.name == "classify")
    assert [t.as_dict() for t in classify.inputs] == [
        {"name": "x", "dtype": "float32", "shape": [None, 8]}
    ]
    assert [t.key for t in classify.outputs] == ["logits", "probs"]
    assert classify.outputs[0].name.startswith("StatefulPartitionedCall")


def test_wrong_tags_name_the_available_ones(model_store: Callable[..., Path]) -> None:
    path = model_store("multihead")
    with pytest.raises(SavedModelError) as caught:
        find_meta_graph(path, ("serve", "gpu"))
    assert str(caught.value) == (
        f"{path} has no MetaGraph tagged serve,gpu; it has: serve. Set `tags` in the manifest to one of these."
    )


def test_not_a_saved_model(tmp_path: Path) -> None:
    with pytest.raises(
        SavedModelError, match=re.escape("is not a SavedModel: it has no saved_model.pb")
    ):
        read_meta_graphs(tmp_path)
    (tmp_path / "saved_model.pb").write_bytes(b"\x12\xff\xff\xff")
    with pytest.raises(SavedModelError, match="cannot parse"):
        read_meta_graphs(tmp_path)
