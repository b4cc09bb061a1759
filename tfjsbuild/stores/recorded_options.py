"""The converter options a state record was built with, as the state file holds them.

Written by this version they are `ConverterOptions.as_dict()`. A record written by an older one
may lack a key, or hold one this version does not know (`verify`, before fingerprint scheme 2):
so they stay the JSON object they were read as, written back unchanged, and are compared key by
key with the wanted `ConverterOptions` only to word why a signature rebuilds. Nothing here reads
files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tfjsbuild.files.json_types import JsonObject
from tfjsbuild.files.readback import as_dict, as_list, as_str
from tfjsbuild.manifest.types import AUTO_QUANTIZATION, ConverterOptions


@dataclass(frozen=True)
class RecordedOptions:
    # The state's `options` object as read (checked where it is shown: quantization, verify).
    recorded_json: JsonObject

    @classmethod
    def of(cls, options: ConverterOptions) -> RecordedOptions:
        """What a record of a build with `options` keeps."""
        return cls(options.as_dict())

    @classmethod
    def from_json_dict(cls, data: Any, where: str) -> RecordedOptions:
        """Options read back from the state (untrusted); raises InvalidData naming the key path."""
        options = dict(as_dict(data, where))
        if options.get("quantization") == AUTO_QUANTIZATION:
            pass  # chosen by the build: the record's `quantization_choice` says what
        elif "quantization" in options:
            options["quantization"] = {
                dtype: [
                    as_str(glob, f"{where}.quantization.{dtype}[{index}]")
                    for index, glob in enumerate(as_list(globs, f"{where}.quantization.{dtype}"))
                ]
                for dtype, globs in as_dict(
                    options["quantization"], f"{where}.quantization"
                ).items()
            }
        if "verify" in options:
            as_dict(options["verify"], f"{where}.verify")
        return cls(options)

    def to_json_dict(self) -> JsonObject:
        """As the state file writes it: exactly what was read, or `ConverterOptions.as_dict()`."""
        return dict(self.recorded_json)

    @property
    def weight_shard_size_bytes(self) -> int:
        """The shard size it was written with; the converter's default where none is recorded."""
        value = self.recorded_json.get("weight_shard_size_bytes")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        return ConverterOptions().weight_shard_size_bytes

    @property
    def quantization(self) -> dict[str, list[str]]:
        """dtype -> weight name globs, as the report shows them (empty when none recorded)."""
        quantization = self.recorded_json.get("quantization", {})
        return {} if quantization == AUTO_QUANTIZATION else dict(quantization)
