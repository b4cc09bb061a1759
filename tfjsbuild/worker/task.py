"""What runs in a worker process: one signature conversion (or verification of an output
already built) per task, the model loaded once; the task and outcome types the parent sends
and gets back.

This module itself imports no TensorFlow; `run_task` imports `tfjsbuild.worker.loaders` (and so
TensorFlow, Keras and a Python source's code) on first use, inside the worker. Workers return
outcomes and never touch the state file. How worker processes are started, watched and
replaced is `building/local_pool.py`'s business.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tfjsbuild.errors import SignatureError, SourceError, TfjsBuildError
from tfjsbuild.manifest.types import ConverterOptions, Source
from tfjsbuild.sources.registry import kind_of
from tfjsbuild.verify.request import BackendRequest
from tfjsbuild.version import STOCK_PASSES_VARIABLE

if TYPE_CHECKING:
    from tfjsbuild.verify.compare import BackendVerification, Verification
    from tfjsbuild.verify.quantization import QuantizationChoice
    from tfjsbuild.verify.record import VerificationRecord
    from tfjsbuild.verify.verifier import Verifier
    from tfjsbuild.worker.loaded import LoadedSource

# What a task is doing, as errors say it ("... while converting"); the parent hears of each.
STARTING = "starting the worker"
LOADING = "loading the source"
CONVERTING = "converting"
VERIFYING = "verifying in TensorFlow.js"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class VerifyTask:
    """Run the converted signature in TensorFlow.js and compare it with TensorFlow."""

    samples: int
    inputs: str | None  # a .npz of real inputs; None: generate `samples` sets
    seed: str  # generated inputs depend only on this (model:signature) and the input specs
    backends: tuple[BackendRequest, ...]  # each run and compared, in this order
    node: str
    runtime: str
    # Whether the plan found a browser for webgl; the worker finds its own (on a Ray node, the
    # node's). None found then: webgl is skipped, or fails where required.
    browser: bool = False


@dataclass(frozen=True)
class ConversionTask:
    key: str
    source: Source
    signature: str
    options: ConverterOptions
    staging_dir: str
    # Identifies the source's content: a worker reuses its loaded model while this matches.
    model_key: str  # the source and its digest: a worker keeps one model loaded per key
    scratch_dir: str  # for Keras exports; the parent removes it after the build
    verify: VerifyTask | None = None
    # Seconds the work may take once the worker starts it (the local pool stops it after).
    timeout: float | None = None
    # "convert": into `staging_dir`, then verify it there when `verify` is set. "verify": only
    # verify the output already in `output_dir` (read, never written; `verify` is set).
    kind: Literal["convert", "verify"] = "convert"
    output_dir: str | None = None
    # TFJS_BUILD_STOCK_PASSES as the build saw it: a Ray worker does not share its environment.
    stock_passes: bool = False
    # Which build the task is of (one id per `execute` call): a worker forgets, at the first
    # task of another build, what only an earlier build could use (its scratch folder's files).
    build: str | None = None
    # The strictest verify.atol of the signature (None: verification off): quantized weights
    # whose steps exceed it are warned about, and `quantization: auto` skips that setting.
    quantization_atol: float | None = None


@dataclass(frozen=True)
class ConversionOutcome:
    key: str
    error: str | None
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    # Where the manifest should point for this error: "source" or "signature" (None: no line).
    error_at: str | None = None
    # As recorded (`Verification.as_record()`): the parent keeps it in the state, cache entries
    # and reports; a failed one's message is `error`.
    verification: VerificationRecord | None = None
    # The static check of quantized weights' ranges, for the parent to print (no verdict).
    warnings: tuple[str, ...] = ()
    # What `quantization: auto` tried and kept; None for any other quantization.
    quantization: QuantizationChoice | None = None


@dataclass(frozen=True)
class Converted:
    """What converting (and verifying) one signature found, besides the files it staged."""

    verification: Verification | None = None
    warnings: tuple[str, ...] = ()
    quantization: QuantizationChoice | None = None


def prepare_environment() -> None:
    """Before TensorFlow is imported in a worker: quiet, and the same graphs on every machine."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # With oneDNN on (the x86 default), grappler fuses MatMul+BiasAdd+Tanh (and more) into ops
    # TensorFlow.js cannot run; without it the graph is the same on every machine.
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"


def init_worker(log_path: str | None) -> None:
    """Quiet TensorFlow, leave Ctrl-C to the parent, and send the worker's chatter to a log."""
    prepare_environment()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if log_path is not None:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)


def located_at(phase: str) -> str:
    """Where the manifest should point for a failure in `phase`: the source or the signature."""
    return "signature" if phase in (CONVERTING, VERIFYING) else "source"


def user_frame(frames: Iterable[tuple[str, int]], source: Source) -> str:
    """` (at models/net.py:12)`: the first of `frames` (innermost first) in a python: source's
    folder, outside installed packages; "" for other sources or when there is none."""
    return kind_of(source).user_frame(source, frames)


def _ended_by(error: BaseException) -> str:
    """What user code did to end the worker, in its own words."""
    if isinstance(error, SystemExit):
        code = "" if error.code is None else repr(error.code)
        return f"sys.exit({code}) was called"
    message = str(error)
    return f"{type(error).__name__} was raised" + (f" ({message})" if message else "")


def run_task(task: ConversionTask, progress: Progress | None = None) -> ConversionOutcome:
    """Convert (and verify) one signature, or verify its output in place (`kind="verify"`);
    `progress` hears each phase as it starts."""
    # TensorFlow is imported once per process, before the clock starts: a worker's start-up is
    # not this signature's time. (A local worker imports it before its first task; should the
    # import fail, the same import inside the `try` below fails the task, saying why.)
    with contextlib.suppress(Exception):
        import tfjsbuild.worker.loaders  # noqa: F401
    start = time.perf_counter()
    timings: dict[str, float] = {}
    phase = LOADING

    def enter(next_phase: str) -> None:
        nonlocal phase
        phase = next_phase
        if progress is not None:
            progress(next_phase)

    try:
        converted = _convert_and_verify(task, timings, enter)
    except TfjsBuildError as error:
        error_at = None
        if isinstance(error, SourceError):
            error_at = "source"
        elif isinstance(error, SignatureError):
            error_at = "signature"
        return ConversionOutcome(
            task.key, str(error), time.perf_counter() - start, timings, error_at
        )
    except Exception as error:
        # The converter's own error, with the innermost frame so a bug report can use it.
        frame = traceback.extract_tb(error.__traceback__)[-1]
        where = f" (at {Path(frame.filename).name}:{frame.lineno})"
        message = f"{type(error).__name__}: {error}{where}"
        return ConversionOutcome(task.key, message, time.perf_counter() - start, timings)
    except BaseException as error:
        # SystemExit, KeyboardInterrupt, GeneratorExit: user code tried to end the worker (its
        # Ctrl-C is ignored, so none comes from the terminal). Only this signature fails.
        traceback.print_exc()  # the whole story, in the worker log
        return ConversionOutcome(
            task.key,
            _ended_message(error, phase, task.source),
            time.perf_counter() - start,
            timings,
            located_at(phase),
        )
    # The one place a verification becomes what the parent records (see ConversionOutcome).
    verification = converted.verification
    return ConversionOutcome(
        task.key,
        verification.message if verification is not None else None,
        time.perf_counter() - start,
        timings,
        verification=verification.as_record() if verification is not None else None,
        warnings=converted.warnings,
        quantization=converted.quantization,
    )


def _convert_and_verify(
    task: ConversionTask, timings: dict[str, float], enter: Progress
) -> Converted:
    """Load the source, convert into the staging folder unless only verifying, then verify
    when the task asks to; a failed verification is returned, not raised."""
    from tfjsbuild.worker import loaders

    # Read where the graph is optimized (worker/optimize.py); set per task, as the build saw it.
    os.environ[STOCK_PASSES_VARIABLE] = "1" if task.stock_passes else ""
    if task.verify is not None:  # Node.js imports TensorFlow.js while this worker converts
        _verifier(task.verify).start()
    enter(LOADING)  # the time limit starts now, with TensorFlow imported
    load_start = time.perf_counter()
    loaded = loaders.load(task.source, task.model_key, Path(task.scratch_dir), task.build)
    if time.perf_counter() - load_start > 0.001:
        timings["load"] = time.perf_counter() - load_start
    warnings: tuple[str, ...] = ()
    if task.kind == "verify":
        # The output in place is read, not written: this task never enters CONVERTING.
        assert task.output_dir is not None and task.verify is not None
        verified, kept = task.output_dir, "The output and its recorded verification are kept."
    else:
        enter(CONVERTING)
        from tfjsbuild.worker.quantize import convert_quantized

        warnings = convert_quantized(
            loaded,
            task.signature,
            Path(task.staging_dir),
            task.options,
            task.quantization_atol,
            verifying=task.verify is not None,
            timings=timings,
        )
        verified, kept = task.staging_dir, "The previous output is kept."
    if task.verify is None:
        return Converted(warnings=warnings)
    enter(VERIFYING)
    verify_start = time.perf_counter()
    settings = task.verify
    tensorflow: list[dict[str, Any]] = []  # TensorFlow's outputs: computed once per task

    def verify(folder: str | Path) -> Verification:
        return verify_output(
            loaded, task.signature, str(folder), settings, kept, timings, tensorflow
        )

    try:
        if task.kind == "convert" and task.options.auto_quantization:
            from tfjsbuild.worker import quantize

            size, atol = task.options.weight_shard_size_bytes, task.quantization_atol
            verification, choice = quantize.choose(Path(verified), size, atol, verify)
            return Converted(verification, warnings, choice)
        return Converted(verify(verified), warnings)
    finally:
        timings["verify"] = time.perf_counter() - verify_start


def _ended_message(error: BaseException, phase: str, source: Source) -> str:
    """What user code did to end the worker, while what, and where in the user's code."""
    frames = [(f.filename, f.lineno or 0) for f in traceback.extract_tb(error.__traceback__)]
    where = user_frame(reversed(frames), source)
    if not where and frames:
        where = f" (at {Path(frames[-1][0]).name}:{frames[-1][1]})"
    message = f"{_ended_by(error)} while {phase}{where}"
    if isinstance(error, SystemExit):
        message += "; to fail, raise an exception instead of exiting"
    return message


def _verifier(settings: VerifyTask) -> Verifier:
    from tfjsbuild.verify.runtime import Runtime
    from tfjsbuild.verify.verifier import shared_verifier

    return shared_verifier(Runtime(settings.node, Path(settings.runtime)))


def verify_output(
    loaded: LoadedSource,
    signature: str,
    output_dir: str,
    settings: VerifyTask,
    kept: str = "The previous output is kept.",
    timings: dict[str, float] | None = None,
    tensorflow: list[dict[str, Any]] | None = None,
) -> Verification:
    """TensorFlow (the loaded source) against TensorFlow.js (Node.js) on the same inputs; each
    side's time goes into `timings` ("verify: tensorflow", "verify: tfjs <phase>").

    `tensorflow`: TensorFlow's outputs of an earlier call on the same samples, reused; an empty
    list is filled (candidates of `quantization: auto` are verified on the same samples)."""
    from tfjsbuild.verify import compare as verify

    specs = loaded.input_specs(signature)
    if settings.inputs is not None:
        samples = verify.load_inputs(Path(settings.inputs), specs)
    else:
        samples = verify.generate_inputs(specs, settings.samples, settings.seed)
    expected: list[dict[str, Any]] = [] if tensorflow is None else tensorflow
    tensorflow_seconds = 0.0

    def run_tensorflow() -> None:  # while Node.js runs TensorFlow.js on the same samples
        nonlocal tensorflow_seconds
        start = time.perf_counter()
        try:
            expected.extend(loaded.run(signature, sample) for sample in samples)
        except Exception as error:  # e.g. generated shapes the model cannot take
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise verify.VerificationError(
                f"TensorFlow could not run the signature on the verification inputs "
                f"({type(error).__name__}: {first}); give inputs it accepts with verify.inputs "
                "(a .npz keyed by input name)"
            ) from error
        tensorflow_seconds = time.perf_counter() - start

    # TensorFlow's side runs while the first backend's does (unless it ran already).
    first = [] if expected else [run_tensorflow]
    computed = not expected
    runs = []
    for wanted in settings.backends:
        run = _run_backend(wanted, settings, Path(output_dir), samples, expected, first, timings)
        if run.note is not None and not run.skipped:  # `auto` ran the CPU backend: say why
            print(
                f"tfjs-build: verified signature '{signature}' on the CPU backend: {run.note} "
                f"({output_dir})",
                flush=True,
            )
        runs.append(run)
    if timings is not None and computed and not first:
        timings["verify: tensorflow"] = tensorflow_seconds
    return verify.Verification(len(samples), settings.inputs or "generated", tuple(runs), kept)


def _run_backend(
    wanted: BackendRequest,
    settings: VerifyTask,
    output_dir: Path,
    samples: Sequence[Mapping[str, Any]],
    expected: Sequence[Mapping[str, Any]],
    first: list[Callable[[], None]],
    timings: dict[str, float] | None,
) -> BackendVerification:
    """One backend's outputs compared with TensorFlow's (`expected`, computed by the one
    callable in `first` while the first backend runs); TF.js's phases add to `timings`."""
    from tfjsbuild.verify import compare as verify
    from tfjsbuild.verify.runtime import find_browser, no_browser_reason
    from tfjsbuild.verify.verifier import BackendFailed

    atol, rtol = wanted.atol, wanted.rtol
    browser = find_browser() if wanted.backend == "webgl" and settings.browser else None
    if wanted.backend == "webgl" and browser is None:
        if wanted.required:
            why = f"WebGL is required (verify.backends.webgl.required), but {no_browser_reason()}"
            return verify.BackendVerification("webgl", atol, rtol, error=why)
        return verify.BackendVerification(
            "webgl", atol, rtol, skipped=True, note=f"skipped: {no_browser_reason()}"
        )
    meanwhile = first.pop() if first else None
    try:
        got = _verifier(settings).run(
            output_dir,
            samples,
            wanted.backend,
            meanwhile=meanwhile,
            browser=browser,
        )
    except BackendFailed as failed:
        ran = "cpu" if wanted.backend == "auto" else wanted.backend  # auto fails as cpu does
        return verify.BackendVerification(ran, atol, rtol, error=str(failed))
    if timings is not None:
        for phase, seconds in got.seconds.items():
            timings[f"verify: tfjs {phase}"] = timings.get(f"verify: tfjs {phase}", 0.0) + seconds
    return verify.BackendVerification(
        got.backend,
        atol,
        rtol,
        tuple(verify.compare(expected, got.outputs, atol, rtol)),
        seconds=got.seconds.get("load", 0.0) + got.seconds.get("run", 0.0),
        note=got.fallback,
    )
