"""`tfjs-build watch`: rebuild what the planner says changed, once sources have gone quiet.

Events are filtered positively: only the manifests and the model sources matter, so the
tool's own writes (outputs, staging, `.tfjs-build/`) never trigger a cycle. A burst of events
gives one cycle, started once nothing relevant has changed for the quiet period; a SavedModel
is built only once it is complete on disk. Which signatures to rebuild is the planner's call.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from watchdog.events import (
    EVENT_TYPE_CLOSED_NO_WRITE,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MOVED,
    EVENT_TYPE_OPENED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from tfjsbuild import api
from tfjsbuild.building.executors import KeptWorkers
from tfjsbuild.building.results import Reporter
from tfjsbuild.errors import ManifestError, TfjsBuildError, UsageError
from tfjsbuild.manifest.types import Manifest
from tfjsbuild.planning.manifests import load_manifests
from tfjsbuild.sources.registry import kind_of

DEFAULT_QUIET_PERIOD = 1.0
# How often a model that was still being written is looked at again without new events.
RECHECK_SECONDS = 2.0


@dataclass(frozen=True)
class Cycle:
    """What one watch cycle did: a build, a manifest error, or waiting for sources."""

    number: int
    trigger: tuple[str, ...]
    result: api.BuildResult | None = None
    manifest_error: str | None = None
    waiting: tuple[str, ...] = ()
    error: str | None = None
    started: float = field(default_factory=time.time)


@dataclass(frozen=True)
class _Scope:
    """The paths whose changes matter, for the manifests as last loaded."""

    manifests: frozenset[Path]
    sources: dict[Path, str]  # source path -> model name
    # A Python source's `inputs` globs: (folder they are relative to, pattern) -> model name.
    globs: dict[tuple[Path, str], str] = field(default_factory=dict)

    def relevant(self, path: Path, event_type: str) -> bool:
        if path in self.manifests:
            return True
        if self._glob_model(path) is not None:
            return True
        for source in self.sources:
            if path == source or source in path.parents:
                return True
            # A folder above a source counts only when it appears, goes or moves
            # (rm -rf models && export), not when something is written beside it.
            if path in source.parents and event_type in (
                EVENT_TYPE_CREATED,
                EVENT_TYPE_DELETED,
                EVENT_TYPE_MOVED,
            ):
                return True
        return False

    def _glob_model(self, path: Path) -> str | None:
        for (root, pattern), model in self.globs.items():
            if path.is_relative_to(root) and glob_regex(pattern).fullmatch(
                path.relative_to(root).as_posix()
            ):
                return model
        return None

    def watches(self) -> set[tuple[Path, bool]]:
        watches = {(manifest.parent, False) for manifest in self.manifests}
        for root, pattern in self.globs:
            parts = PurePosixPath(pattern).parts
            fixed = next((i for i, part in enumerate(parts) if set(part) & set("*?[")), len(parts))
            base = root.joinpath(*parts[: max(0, min(fixed, len(parts) - 1))])
            while not base.is_dir() and base != base.parent:
                base = base.parent
            watches.add((base, fixed < len(parts) - 1))
        for source in self.sources:
            if source.is_dir():
                watches.add((source, True))
            anchor = source.parent
            while not anchor.is_dir() and anchor != anchor.parent:
                anchor = anchor.parent
            watches.add((anchor, False))
        return watches


def scope_of(manifest_paths: Iterable[Path], manifests: Sequence[Manifest]) -> _Scope:
    sources: dict[Path, str] = {}
    globs: dict[tuple[Path, str], str] = {}
    for manifest in manifests:
        for model in manifest.models:
            watched = kind_of(model.source).watch_paths(model.source)
            for path in watched.paths:
                sources[Path(os.path.abspath(path))] = model.name
            for root, pattern in watched.globs:
                globs[(Path(os.path.abspath(root)), pattern)] = model.name
    return _Scope(frozenset(Path(os.path.abspath(p)) for p in manifest_paths), sources, globs)


@functools.cache
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A pathlib-style glob as a regex over POSIX relative paths: `**/` spans folders."""
    regex = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            regex += ".*"
            index += 2
        elif pattern[index] == "*":
            regex += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            regex += "[^/]"
            index += 1
        else:
            regex += re.escape(pattern[index])
            index += 1
    return re.compile(regex)


class _Collector(FileSystemEventHandler):
    """Collects relevant changed paths from watchdog's thread for the loop."""

    def __init__(self, scope: _Scope) -> None:
        self.condition = threading.Condition()
        self.scope = scope
        self.changed: set[Path] = set()
        self.last_event = 0.0
        self.rescope = False

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in (EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE):
            return
        paths = [event.src_path, getattr(event, "dest_path", "") or ""]
        with self.condition:
            found = {
                Path(os.path.abspath(os.fsdecode(p)))
                for p in paths
                if p
                and self.scope.relevant(Path(os.path.abspath(os.fsdecode(p))), event.event_type)
            }
            if found:
                self.changed |= found
                self.last_event = time.monotonic()
                if event.event_type in (
                    EVENT_TYPE_CREATED,
                    EVENT_TYPE_DELETED,
                    EVENT_TYPE_MOVED,
                ) and any(
                    p in self.scope.sources or any(p in s.parents for s in self.scope.sources)
                    for p in found
                ):
                    # A source (or a folder above it) came or went: watch the new one at once,
                    # so the rest of an export is seen as it is written.
                    self.rescope = True
                self.condition.notify_all()

    def wait_for_quiet(
        self, quiet_period: float, stop: threading.Event, recheck: bool, rescope: Callable[[], None]
    ) -> set[Path] | None:
        """Changed paths once nothing relevant happened for `quiet_period`; None when stopped."""
        recheck_at = time.monotonic() + RECHECK_SECONDS if recheck else None
        with self.condition:
            while not stop.is_set():
                if self.rescope:
                    self.rescope = False
                    self.condition.release()
                    try:
                        rescope()
                    finally:
                        self.condition.acquire()
                now = time.monotonic()
                if self.changed and now - self.last_event >= quiet_period:
                    changed, self.changed = self.changed, set()
                    return changed
                if recheck_at is not None and now >= recheck_at and not self.changed:
                    return set()
                timeout = 0.2
                if self.changed:
                    timeout = min(timeout, max(0.01, self.last_event + quiet_period - now))
                self.condition.wait(timeout)
        return None


class Watcher:
    """The watch loop; `run` returns when `stop` is set (or raises KeyboardInterrupt)."""

    def __init__(
        self,
        manifests: Sequence[str | Path],
        *,
        jobs: int | None = None,
        paranoid: bool = False,
        verify: bool = True,
        cache: str | None = None,
        quiet_period: float = DEFAULT_QUIET_PERIOD,
        reporter: Reporter | None = None,
        on_cycle: Callable[[Cycle], None] = lambda cycle: None,
        stop: threading.Event | None = None,
    ) -> None:
        self.manifest_paths = [Path(m) for m in manifests] or [Path("tfjs-build.yaml")]
        self.jobs = jobs
        self.paranoid = paranoid
        self.verify = verify
        self.cache = cache
        self.quiet_period = quiet_period
        self.reporter = reporter
        self.on_cycle = on_cycle
        self.stop = stop or threading.Event()
        self.manifests: list[Manifest] = []
        self.waiting: dict[str, str] = {}  # model -> why its source is not ready
        self.cycles = 0
        # Workers kept from cycle to cycle: TensorFlow is imported (and a model loaded) once.
        self.workers = KeptWorkers()

    def run(self) -> None:
        for path in self.manifest_paths:
            if not path.is_file():
                raise UsageError(f"no manifest: {path} does not exist")
        observer = Observer()
        collector = _Collector(scope_of(self.manifest_paths, []))
        observer.start()
        try:
            error = self._reload()
            self._rescope(observer, collector)
            self._cycle(("(start)",), error)
            while not self.stop.is_set():
                changed = collector.wait_for_quiet(
                    self.quiet_period,
                    self.stop,
                    recheck=bool(self.waiting),
                    rescope=lambda: self._rescope(observer, collector),
                )
                if changed is None:
                    break
                if not changed and not self._waiting_model_ready():
                    continue  # a recheck found every waiting model still incomplete: say nothing
                manifest_touched = any(p in collector.scope.manifests for p in changed)
                error = self._reload() if manifest_touched else None
                self._rescope(observer, collector)
                root = self.manifest_paths[0].resolve().parent
                trigger = tuple(sorted(_relative(p, root) for p in changed)) or ("(recheck)",)
                self._cycle(trigger, error)
        finally:
            self.workers.close()
            observer.stop()
            observer.join(timeout=5)

    def _waiting_model_ready(self) -> bool:
        sources = {
            model.name: model.source for manifest in self.manifests for model in manifest.models
        }
        return any(
            kind_of(sources[name]).incomplete(sources[name]) is None
            for name in self.waiting
            if name in sources
        )

    def _reload(self) -> str | None:
        """Re-read the manifests; on error keep the last good ones and return the message."""
        try:
            self.manifests = load_manifests(self.manifest_paths)
        except ManifestError as error:
            return error.format()
        except UsageError as error:
            return str(error)
        return None

    def _rescope(self, observer: BaseObserver, collector: _Collector) -> None:
        scope = scope_of(self.manifest_paths, self.manifests)
        with collector.condition:
            collector.scope = scope
        observer.unschedule_all()
        for path, recursive in sorted(scope.watches()):
            if path.is_dir():
                observer.schedule(collector, str(path), recursive=recursive)

    def _cycle(self, trigger: tuple[str, ...], manifest_error: str | None) -> None:
        self.cycles += 1
        cycle = Cycle(self.cycles, trigger, manifest_error=manifest_error)
        self.waiting = {}
        for manifest in self.manifests:
            for model in manifest.models:
                reason = kind_of(model.source).incomplete(model.source)
                if reason is not None:
                    self.waiting[model.name] = reason
        ready = [
            m.name
            for manifest in self.manifests
            for m in manifest.models
            if m.name not in self.waiting
        ]
        cycle = replace(
            cycle, waiting=tuple(f"{name}: {why}" for name, why in sorted(self.waiting.items()))
        )
        if ready:
            try:
                result = api.build_manifests(
                    self.manifests,
                    # A model still being written is left for a later cycle (and not pruned).
                    selection=ready if self.waiting else [],
                    jobs=self.jobs,
                    paranoid=self.paranoid,
                    verify=self.verify,
                    cache=self.cache,
                    reporter=self.reporter,
                    workers=self.workers,
                )
                cycle = replace(cycle, result=result)
            except TfjsBuildError as error:
                text = error.format() if isinstance(error, ManifestError) else str(error)
                cycle = replace(cycle, error=text)
        self.on_cycle(cycle)


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
