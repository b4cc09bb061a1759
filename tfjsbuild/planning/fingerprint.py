"""What a signature's output depends on, as one digest with its parts kept for explanations.

The source's own digest comes from its kind (`tfjsbuild.sources`), hashed file by file,
cheapest check first.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata

from tfjsbuild.manifest.types import ConverterOptions
from tfjsbuild.sources.digest import canonical_json, sha256_text
from tfjsbuild.sources.registry import KINDS
from tfjsbuild.stores.cache_entry import CACHE_VERSION
from tfjsbuild.verify.request import VerificationRequest
from tfjsbuild.version import stock_passes_requested

# Bump when what goes into a fingerprint changes: every signature then rebuilds once.
# 2: verification settings left the digest (they are compared on their own: `verify`).
SCHEME_VERSION = "2"
# Bump when what a layers model's output holds changes: only layers models then rebuild once.
# 2: model.json carries the model's inputs and outputs (`signature`), for the asset index.
LAYERS_OUTPUT_VERSION = "2"
TOOL_DISTRIBUTIONS = ("tensorflow", "tensorflowjs", "tfjs-build")
SHARED = "shared"  # the `weights` part of a signature with `share_weights`


@dataclass(frozen=True)
class FingerprintParts(Mapping[str, str]):
    """The named values a digest is made of (each a value or a digest of one).

    A mapping too, by part name: a record read back from the state keeps its parts as plain JSON
    (of whatever scheme wrote it), and reasons compare the two name by name.
    """

    scheme: str
    tools: str  # "name=version,..." sorted by name
    source: str
    source_kind: str
    signature: str
    tags: str
    options: str
    output: str
    # Only for formats other than graph_model, so graph model fingerprints stay as they were.
    format: str | None = None
    layers_output: str | None = None  # LAYERS_OUTPUT_VERSION, for layers models only
    # `quantization: auto` only: the verification's digest, which the chosen output depends on.
    quantization_auto: str | None = None
    # `share_weights` only ("shared"): the output's files differ, its weights do not.
    weights: str | None = None

    def as_dict(self) -> dict[str, str]:
        parts = {
            "scheme": self.scheme,
            "tools": self.tools,
            "source": self.source,
            "source_kind": self.source_kind,
            "signature": self.signature,
            "tags": self.tags,
            "options": self.options,
            "output": self.output,
        }
        if self.format is not None:
            parts["format"] = self.format
        if self.layers_output is not None:
            parts["layers_output"] = self.layers_output
        if self.quantization_auto is not None:
            parts["quantization_auto"] = self.quantization_auto
        if self.weights is not None:
            parts["weights"] = self.weights
        return parts

    def __getitem__(self, name: str) -> str:
        return self.as_dict()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())


@dataclass(frozen=True)
class SignatureFingerprint:
    """What the output's bytes depend on (`digest`), and apart from it what its verification does.

    Verification settings are not in the digest: changing them re-verifies the existing output
    instead of converting it again, and an output built without verifying stays up to date.
    """

    digest: str
    parts: FingerprintParts  # compared to a record's parts to explain a rebuild
    options: ConverterOptions  # effective converter options, compared key by key for reasons
    # Not hashed, only compared to explain a change: the graph hash and each capture's digest
    # by name (names change between identical Keras exports; the digest must not).
    details: Mapping[str, str] = field(default_factory=dict)
    # What a verification depends on (settings, sample inputs' digest, TF.js version); None
    # when verification is off for this signature. A record keeps the one it was verified with.
    verify: VerificationRequest | None = None
    # The whole source's content digest, not hashed either: a worker keeps a model it loaded
    # for the next signature of the same source while this stays the same (the per-signature
    # `parts.source` would reload a SavedModel for each signature).
    model: str = ""


def tool_versions(source_kind: str = "saved_model") -> dict[str, str]:
    """Installed versions of the tools that shape the output, read without importing them."""
    names = TOOL_DISTRIBUTIONS + KINDS[source_kind].tool_distributions
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    if stock_passes_requested(os.environ):
        # Outputs are the same bytes either way, but whoever asks for tensorflowjs's own passes
        # wants them used: neither up-to-date outputs nor cache entries of the fast ones count.
        versions["graph passes"] = "tensorflowjs"
    return versions


def fingerprint_signature(
    *,
    source: str,
    source_kind: str,
    signature: str,
    tags: tuple[str, ...],
    options: ConverterOptions,
    output: str,
    tools: Mapping[str, str],
    details: Mapping[str, str] | None = None,
    format: str = "graph_model",
    verify: VerificationRequest | None = None,
    model: str = "",
    share_weights: bool = False,
) -> SignatureFingerprint:
    """`verify`: what a verification depends on (settings, input digest, runtime), or None.

    It is kept beside the digest, not in it: the output does not depend on it.
    """
    parts = FingerprintParts(
        scheme=SCHEME_VERSION,
        tools=",".join(f"{name}={version}" for name, version in sorted(tools.items())),
        source=source,
        source_kind=source_kind,
        signature=signature,
        tags=",".join(tags),
        options=sha256_text(canonical_json(options.as_dict())),
        output=output,
        # Only then, so graph model fingerprints stay as they were.
        format=None if format == "graph_model" else format,
        layers_output=LAYERS_OUTPUT_VERSION if format == "layers_model" else None,
        # What `auto` keeps depends on the verification (tolerances, backends, inputs): the
        # output does, so it is in the digest and the cache key (other signatures: not).
        quantization_auto=sha256_text(canonical_json(verify.to_json_dict()))
        if options.auto_quantization and verify is not None
        else None,
        weights=SHARED if share_weights else None,
    )
    return SignatureFingerprint(
        digest=sha256_text(canonical_json(parts.as_dict())),
        parts=parts,
        options=options,
        details=dict(details or {}),
        verify=verify,
        model=model,
    )


def cache_key(fingerprint: SignatureFingerprint) -> str:
    """Everything that shapes the output (graph, weights, options, versions), not where it goes:
    two checkouts in different folders share entries. Verification settings are not in it (they
    do not shape the output); the entry says which verification it carries."""
    # Nor how its weights are laid out: an entry holds the output as converted, with its own
    # shards; shared ones are laid out from it when placed (building/shared_weights.py).
    parts = {
        name: value
        for name, value in fingerprint.parts.items()
        if name not in ("output", "weights")
    }
    return hashlib.sha256(canonical_json({"cache": CACHE_VERSION, **parts}).encode()).hexdigest()
