"""TensorFlow's C++ log lines, told apart from everything else written to stderr."""

from __future__ import annotations

import os

import pytest

from tfjsbuild.worker.native_log import capture_native_log, native_log_kept_out

NATIVE = (
    "E0000 00:00:1795851750.582360   19931 cuda_dnn.cc:8579] Unable to register cuDNN factory\n"
    "2026-11-28 07:42:33.221254: E external/local_xla/cuda_platform.cc:51] failed call to cuInit\n"
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "WARNING:tensorflow:Compiled the loaded model, but the compiled metrics have yet to be built.\n"
)


def test_native_lines_are_kept_out_and_the_rest_passed_on_even_after_a_failure(
    capfd: pytest.CaptureFixture[str],
) -> None:
    lines: list[str] = []
    with pytest.raises(RuntimeError), native_log_kept_out(lines):
        os.write(2, NATIVE.encode() + b"the user's own line\n")
        raise RuntimeError("the step failed")
    assert capfd.readouterr().err == "the user's own line\n"
    assert lines == NATIVE.splitlines()


def test_a_captured_log_is_kept_and_passed_on_even_after_a_failure(
    capfd: pytest.CaptureFixture[str],
) -> None:
    lines: list[str] = []
    with pytest.raises(RuntimeError), capture_native_log(lines):
        os.write(2, NATIVE.encode())
        raise RuntimeError("the step failed")
    assert lines == NATIVE.splitlines()
    assert capfd.readouterr().err == NATIVE
