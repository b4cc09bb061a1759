from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tfjsbuild.errors import ManifestError
from tfjsbuild.manifest.load import load_manifest
from tfjsbuild.manifest.types import (
    DEFAULT_TIMEOUT,
    BackendCheck,
    Checks,
    ConverterOptions,
    KerasSource,
    PythonSource,
    SavedModelSource,
    VerifySettings,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tfjs-build.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(write(tmp_path, text))
    for problem in caught.value.problems:
        assert problem.file == tmp_path / "tfjs-build.yaml"
    return [f"{p.line}:{p.column}: {p.key_path}: {p.message}" for p in caught.value.problems]


def test_valid_manifest_becomes_typed_values(tmp_path: Path) -> None:
    manifest = load_manifest(
        write(
            tmp_path,
            """
            version: 1
            output_dir: web/models
            defaults:
              quantization: {float16: ["*"]}
              metadata: {app: demo}
            models:
              mobilenet:
                saved_model: models/mobilenet
                signatures:
                  features: {}
                  logits:
                    quantization: {uint8: ["*"]}
                  probs:
                    output: mobilenet-probs
              small:
                saved_model: models/small
                tags: [serve, gpu]
                weight_shard_size_bytes: 1024
            """,
        )
    )
    assert manifest.output_dir == (tmp_path / "web/models").resolve()
    assert manifest.layout == "{model}/{signature}"
    mobilenet, small = manifest.models
    assert mobilenet.source == SavedModelSource(tmp_path.resolve() / "models/mobilenet", ("serve",))
    assert mobilenet.signatures is not None
    features, logits, probs = mobilenet.signatures
    assert features.options.quantization == (("float16", ("*",)),)
    assert features.options.metadata == {"app": "demo"}
    # An override replaces the whole quantization mapping; other options stay inherited.
    assert logits.options == ConverterOptions(
        quantization=(("uint8", ("*",)),), metadata_json='{"app": "demo"}'
    )
    assert probs.output == "mobilenet-probs"
    assert manifest.output_for("mobilenet", "probs", probs.output) == "mobilenet-probs"
    assert manifest.output_for("mobilenet", "features", None) == "mobilenet/features"
    assert small.signatures is None  # "*" by default: every signature of the SavedModel
    assert small.options.weight_shard_size_bytes == 1024
    assert small.source == SavedModelSource(tmp_path.resolve() / "models/small", ("serve", "gpu"))


def test_lone_star_is_the_converters_fallthrough() -> None:
    options = ConverterOptions(quantization=(("float16", ("*",)), ("uint8", ("dense/*",))))
    assert options.quantization_dtype_map() == {"float16": True, "uint8": ["dense/*"]}


def test_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        version: 1
        models:
          a:
            saved_model: [unclosed
        """,
    ) == [
        "5:1: : invalid YAML: while parsing a flow sequence expected ',' or ']', but got '<stream end>'"
    ]


def test_duplicate_keys_are_errors_anywhere(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        version: 1
        models:
          a:
            saved_model: one
            saved_model: two
          a:
            saved_model: three
        """,
    ) == [
        "5:5: models.a.saved_model: duplicate key 'saved_model' (first defined on line 4); "
        "YAML keeps only one of them: remove or rename the other",
        "6:3: models.a: duplicate key 'a' (first defined on line 3); "
        "YAML keeps only one of them: remove or rename the other",
    ]


def test_unknown_keys_suggest_near_misses(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        version: 1
        defaults:
          quantisation: {float16: ["*"]}
        models:
          a:
            saved_model: m
            signature: [serving_default]
            colour: red
        """,
    ) == [
        "3:3: defaults.quantisation: unknown key 'quantisation'; did you mean 'quantization'?",
        "7:5: models.a.signature: unknown key 'signature'; did you mean 'signatures'?",
        "8:5: models.a.colour: unknown key 'colour'; allowed here: quantization, "
        "weight_shard_size_bytes, strip_debug_ops, control_flow_v2, skip_op_check, "
        "use_structured_outputs_names, metadata, saved_model, keras, python, tags, signatures, "
        "format, inputs, verify, max_bytes, share_weights, timeout",
    ]


def test_wrong_types_and_values(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        version: 2
        defaults:
          weight_shard_size_bytes: -5
          strip_debug_ops: "yes please"
          quantization:
            int8: ["*"]
        models:
          Bad_Name:
            saved_model: m
          ok:
            saved_model: m
            format: graph
            signatures: 3
        """,
    ) == [
        "1:10: version: unsupported manifest version 2: this tfjs-build reads version 1",
        "3:28: defaults.weight_shard_size_bytes: must be at least 1, got -5",
        "4:20: defaults.strip_debug_ops: expected true or false, got text 'yes please'",
        "6:5: defaults.quantization.int8: unknown quantization dtype 'int8'; use one of "
        "float16, uint8, uint16; did you mean 'uint8'?",
        "8:3: models.Bad_Name: invalid model name 'Bad_Name': use lowercase letters, digits, "
        "'-' and '_', starting with a letter or digit",
        "12:5: models.ok.format: 'format' applies to keras sources only; remove it from this "
        "saved_model model",
        "12:13: models.ok.format: must be one of graph_model, layers_model; got text 'graph'; "
        "did you mean 'graph_model'?",
        '13:17: models.ok.signatures: expected a list of signature names, "*" for all, or a '
        "mapping of name to per-signature options; got int 3",
    ]


def test_a_model_needs_exactly_one_source(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        version: 1
        models:
          none:
            signatures: [a]
          two:
            saved_model: m
            python: pkg.mod:build
        """,
    ) == [
        "3:3: models.none: model 'none' has no source: add exactly one of saved_model, keras, python",
        "7:5: models.two.python: model 'two' has 2 sources (saved_model, python): keep exactly one",
    ]


def test_keras_and_python_sources_become_typed_values(tmp_path: Path) -> None:
    manifest = load_manifest(
        write(
            tmp_path,
            """
            version: 1
            models:
              heads:
                keras: models/heads.keras
              legacy:
                keras: models/legacy.H5
                format: layers_model
              folder:
                keras: models/tfkeras
              code:
                python: models.net:build
                inputs: ["models/**/*.py", data/scale.json]
                signatures: [score]
            """,
        )
    )
    heads, legacy, folder, code = (model.source for model in manifest.models)
    root = tmp_path.resolve()
    assert heads == KerasSource(root / "models/heads.keras", "graph_model")
    assert (heads.container, legacy.container, folder.container) == (
        "keras_v3",
        "h5",
        "saved_model",
    )
    assert heads.as_saved_model() is None
    assert folder.as_saved_model() == SavedModelSource(root / "models/tfkeras", ("serve",))
    assert legacy == KerasSource(root / "models/legacy.H5", "layers_model")
    assert legacy.as_saved_model() is None
    assert code == PythonSource("models.net:build", ("models/**/*.py", "data/scale.json"), root)
    assert (code.module, code.attribute) == ("models.net", "build")
    assert code.module_files() == (root / "models/net.py", root / "models/net/__init__.py")


def test_rules_for_keras_and_python_sources(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        version: 1
        models:
          code:
            python: models.net:build
          everything:
            python: models.net:build
            signatures: "*"
          keras3:
            keras: models/heads.keras
            format: layers_model
          h5:
            keras: models/small.h5
            format: layers_model
            inputs: [a.py]
        """,
    ) == [
        "4:13: models.code.python: a python source needs `signatures:` naming the functions to "
        "export (tfjs-build plans without running your code, so it cannot list them)",
        "7:5: models.everything.signatures: a python source needs `signatures:` naming the "
        "functions to export (tfjs-build plans without running your code, so it cannot list them)",
        "10:13: models.keras3.format: format: layers_model is not supported for Keras 3 .keras "
        "files: tensorflowjs 4.22 converts them with wrong weights or fails "
        "(tensorflow/tfjs#8229, #8266); use format: graph_model (the default)",
        "14:5: models.h5.inputs: 'inputs' applies to python sources only; remove it from this "
        "keras model",
    ]


def test_integers_written_as_floats_are_ints(tmp_path: Path) -> None:
    """The schema's integers include 3.0; `range(samples)` and a recorded `samples: 3` need 3."""
    manifest = load_manifest(
        write(
            tmp_path,
            """
            version: 1
            defaults: {verify: {samples: 3.0}, max_bytes: 2000.0}
            models: {a: {saved_model: m}}
            """,
        )
    )
    (a,) = manifest.models
    assert (a.checks.verify.samples, a.checks.max_bytes) == (3, 2000)
    assert (type(a.checks.verify.samples), type(a.checks.max_bytes)) == (int, int)


def test_verify_settings_merge_key_by_key(tmp_path: Path) -> None:
    manifest = load_manifest(
        write(
            tmp_path,
            """
            version: 1
            defaults:
              verify: {atol: 0.01, samples: 2}
              max_bytes: 1000000
            models:
              a:
                saved_model: m
                verify: {rtol: 0.1, inputs: samples/a.npz}
                signatures:
                  loose: {verify: {atol: 0.5}, max_bytes: 2000}
                  unverified: {verify: {enabled: false}}
              b:
                saved_model: m
            """,
        )
    )
    a, b = manifest.models
    assert a.signatures is not None
    loose, unverified = a.signatures
    root = tmp_path.resolve()
    assert loose.checks == Checks(
        VerifySettings(True, 2, 0.5, 0.1, root / "samples/a.npz"), max_bytes=2000
    )
    assert unverified.checks.verify.enabled is False
    assert unverified.checks.max_bytes == 1000000
    assert b.checks == Checks(VerifySettings(True, 2, 0.01, 0.001, None), 1000000)


def test_verify_backends_are_one_list_or_mapping_that_a_deeper_scope_replaces(
    tmp_path: Path,
) -> None:
    manifest = load_manifest(
        write(
            tmp_path,
            """
            version: 1
            defaults:
              verify: {backends: [webgl, cpu]}
            models:
              a:
                saved_model: m
                signatures:
                  inherited: {}
                  one: {verify: {backend: wasm}}
                  own:
                    verify:
                      atol: 0.01
                      backends: {wasm: null, webgl: {atol: 0.1, required: true}}
              b:
                saved_model: m
                verify: {backend: cpu}
                signatures:
                  again: {verify: {backends: [wasm]}}
            """,
        )
    )
    a, b = manifest.models
    assert a.signatures is not None and b.signatures is not None
    inherited, one, own = (s.checks.verify for s in a.signatures)
    # In the order they run (cpu, wasm, webgl), whatever the order written.
    assert inherited.backends == (BackendCheck("cpu"), BackendCheck("webgl"))
    assert one.backends == (BackendCheck("wasm"),)
    assert own.backends == (BackendCheck("wasm"), BackendCheck("webgl", 0.1, None, True))
    assert own.atol == 0.01
    assert b.signatures[0].checks.verify.backends == (BackendCheck("wasm"),)
    assert VerifySettings().backends == (BackendCheck("auto"),)
    assert problems(
        tmp_path,
        """
        version: 1
        defaults:
          verify: {atol: -1, samples: 0, inputs: x.csv, tolerance: 1}
          max_bytes: 0
        models:
          a:
            saved_model: m
        """,
    ) == [
        "3:18: defaults.verify.atol: must be at least 0, got -1",
        "3:31: defaults.verify.samples: must be at least 1, got 0",
        "3:42: defaults.verify.inputs: expected a .npz file (numpy.savez, arrays keyed by input "
        "name), got 'x.csv'",
        "3:49: defaults.verify.tolerance: unknown key 'tolerance'; allowed here: enabled, "
        "samples, atol, rtol, inputs, backend, backends",
        "4:14: defaults.max_bytes: must be at least 1, got 0",
    ]


def test_timeout_is_looked_up_signature_model_defaults(tmp_path: Path) -> None:
    manifest = load_manifest(
        write(
            tmp_path,
            """
            version: 1
            defaults:
              timeout: 600
            models:
              a:
                saved_model: m
                timeout: 120.5
                signatures:
                  quick: {timeout: 10}
                  usual:
              b:
                saved_model: m
            """,
        )
    )
    a, b = manifest.models
    assert a.signatures is not None
    assert [s.checks.timeout for s in a.signatures] == [10.0, 120.5]
    assert (a.checks.timeout, b.checks.timeout) == (120.5, 600.0)
    plain = load_manifest(write(tmp_path, "version: 1\nmodels:\n  a:\n    saved_model: m\n"))
    assert plain.models[0].checks.timeout == DEFAULT_TIMEOUT == 3600


def test_quantization_conflicts_tensorflowjs_would_reject(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        version: 1
        models:
          a:
            saved_model: m
            signatures:
              logits:
                quantization:
                  float16: ["*", "dense/*"]
                  uint8: ["*", "dense/*"]
        """,
    ) == [
        "9:19: models.a.signatures.logits.quantization.uint8[0]: '*' is used for both float16 "
        "and uint8: tensorflowjs accepts the catch-all for one dtype only; list node globs for "
        "the other",
        "9:24: models.a.signatures.logits.quantization.uint8[1]: node glob 'dense/*' is listed "
        "under both float16 and uint8: tensorflowjs rejects a node quantized to two dtypes; "
        "keep it under one",
    ]


def test_outputs_that_collide_escape_or_nest(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        version: 1
        output_dir: web
        models:
          b:
            saved_model: models/b
            signatures:
              s1: {output: shared}
              s2: {output: shared}
              s3: {output: ../escape}
              s4: {output: /abs}
              s5: {output: shared/nested}
        """,
    ) == [
        "8:7: models.b.signatures.s2: b:s1 and b:s2 both go to 'shared'; give one of them its "
        "own `output` or change `layout`",
        "9:7: models.b.signatures.s3: output '../escape' of b:s3 escapes output_dir: use a "
        "relative folder below it, without '..'",
        "10:7: models.b.signatures.s4: output '/abs' of b:s4 escapes output_dir: use a relative "
        "folder below it, without '..'",
        "11:7: models.b.signatures.s5: b:s1 and b:s5 nest in each other: 'shared' and "
        "'shared/nested'; give one of them its own `output` or change `layout`",
    ]


def test_outputs_must_not_touch_a_model_source(tmp_path: Path) -> None:
    b_source = (tmp_path / "models/b").resolve()
    c_source = (tmp_path / "models/exported/c").resolve()
    assert problems(
        tmp_path,
        """
        version: 1
        output_dir: models
        models:
          b:
            saved_model: models/b
            signatures:
              s1: {output: b/converted}
          c:
            saved_model: models/exported/c
            signatures:
              s1: {output: exported}
        """,
    ) == [
        f"7:7: models.b.signatures.s1: output 'b/converted' of b:s1 overlaps the source "
        f"of model 'b' ({b_source}): outputs are replaced on every build, so keep them apart",
        f"11:7: models.c.signatures.s1: output 'exported' of c:s1 overlaps the source of model "
        f"'c' ({c_source}): outputs are replaced on every build, so keep them apart",
    ]


def test_layout_placeholders(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        version: 1
        layout: "{model}/{signatur}"
        models:
          a: {saved_model: m}
        """,
    ) == ["2:9: layout: unknown placeholder {signatur} in layout; available: {model}, {signature}"]


def test_layout_without_signature_for_a_multi_signature_model(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        version: 1
        layout: "{model}"
        models:
          a:
            saved_model: m
            signatures: [x, y]
          b:
            saved_model: n
            signatures: [only]
        """,
    ) == [
        "2:9: layout: layout '{model}' has no {signature} but model 'a' exports 2 signatures "
        "(x, y) through it: add {signature} or give each signature an `output`"
    ]


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """
        version: 1
        models:
          a: !!python/object/apply:os.system [echo hacked]
        """,
    ) == [
        "3:6: models.a: unsupported YAML tag tag:yaml.org,2002:python/object/apply:os.system: use plain values"
    ]


def test_empty_manifest(tmp_path: Path) -> None:
    assert problems(tmp_path, "") == ["1:1: : the manifest is empty: start with `version: 1`"]


def test_error_text_shows_the_offending_line(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nmodels:\n  a:\n    saved_model: m\n    signature: [x]\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert caught.value.format() == (
        f"{path}:5:5: models.a.signature: unknown key 'signature'; did you mean 'signatures'?\n"
        "    5 |     signature: [x]\n"
        "      |     ^\n"
        "1 problem found; nothing was built."
    )


def test_a_passed_schema_check_is_remembered_only_beside_existing_state(tmp_path: Path) -> None:
    valid = "version: 1\nmodels:\n  a:\n    saved_model: m\n"
    path = write(tmp_path, valid)
    load_manifest(path)
    assert not (tmp_path / ".tfjs-build").exists()  # validating writes nothing
    (tmp_path / ".tfjs-build/manifests/tfjs-build.yaml").mkdir(parents=True)
    load_manifest(path)
    remembered = (tmp_path / ".tfjs-build/manifests/tfjs-build.yaml/manifest-checked").read_text()
    assert len(remembered) == 64
    # Any edit changes the key, so the schema runs again and reports the problem.
    assert problems(tmp_path, valid + "    colour: red\n") == [
        "5:5: models.a.colour: unknown key 'colour'; allowed here: quantization, "
        "weight_shard_size_bytes, strip_debug_ops, control_flow_v2, skip_op_check, "
        "use_structured_outputs_names, metadata, saved_model, keras, python, tags, signatures, "
        "format, inputs, verify, max_bytes, share_weights, timeout"
    ]
    assert (
        tmp_path / ".tfjs-build/manifests/tfjs-build.yaml/manifest-checked"
    ).read_text() == remembered


def test_merge_keys_are_overridden_not_duplicates(tmp_path: Path) -> None:
    manifest = load_manifest(
        write(
            tmp_path,
            """
            version: 1
            models:
              a: &base
                saved_model: models/a
                weight_shard_size_bytes: 1024
                strip_debug_ops: false
              m: &more {saved_model: models/m, weight_shard_size_bytes: 2048, control_flow_v2: true}
              o:
                <<: *base
                weight_shard_size_bytes: 4096
              b: &b
                <<: [*more, *base]
                saved_model: models/b
              c: *b
            """,
        )
    )
    _, _, o, b, c = manifest.models
    assert o.options.weight_shard_size_bytes == 4096  # the key written here wins
    assert not o.options.strip_debug_ops
    # The first merge source listed wins over later ones, as YAML's merge key says.
    assert b.options.weight_shard_size_bytes == 2048
    assert b.options.control_flow_v2
    assert b.source == SavedModelSource(tmp_path.resolve() / "models/b", ("serve",))
    assert c.options == b.options  # an alias of a merged mapping is read again the same way
    assert problems(
        tmp_path,
        """
        version: 1
        models:
          a:
            saved_model: models/a
            saved_model: models/b
        """,
    ) == [
        "5:5: models.a.saved_model: duplicate key 'saved_model' (first defined on line 4); "
        "YAML keeps only one of them: remove or rename the other"
    ]


def test_an_output_dir_holding_the_manifests_folder_is_refused(tmp_path: Path) -> None:
    """`.`, `..` and `/` are cases in tests/negative/manifests; an absolute parent is here."""
    parent = tmp_path.resolve().parent
    assert problems(
        tmp_path, f"version: 1\noutput_dir: {parent}\nmodels:\n  a:\n    saved_model: m\n"
    ) == [
        f"2:13: output_dir: output_dir '{parent}' contains the manifest's folder: it would hold "
        "the model sources and .tfjs-build/ beside the outputs tfjs-build replaces and prunes; "
        "use a folder of its own, e.g. 'dist'"
    ]
    # Beside the manifest's folder is fine: only its own folder and those above it are refused.
    manifest = load_manifest(
        write(
            tmp_path, f"version: 1\noutput_dir: {parent}/web\nmodels:\n  a:\n    saved_model: m\n"
        )
    )
    assert manifest.output_dir == parent / "web"
