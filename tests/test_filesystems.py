"""Filesystems as they are: bind mounts, read-only mounts, symbolic links, full disks.

The mounts are real, made in a private mount namespace (`unshare --mount`) that a sleeping
process holds open, so they vanish with it whatever happens to the test. A full disk is a tiny
tmpfs, filled up (or with no inode left); a read-only folder is a read-only bind mount (root
ignores file modes). Skipped only where mount namespaces or mounts are not permitted (not root,
or a container without CAP_SYS_ADMIN): CI runs as root and runs them.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tfjsbuild
from conftest import STATE, no_internal_error, run_cli
from tfjsbuild.files.atomic import swap_directory
from tfjsbuild.stores.records import output_change
from tfjsbuild.stores.state import load_state

MANIFEST = """\
version: 1
defaults:
  verify: {enabled: false}
models:
  m:
    saved_model: m
    signatures: [first]
"""
OUTPUT_REMEDY = "make it writable or set output_dir to a writable folder"


class MountNamespace:
    """A private mount namespace, held open by a sleeping process; commands run in it."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sleep", "900"],
            stderr=subprocess.PIPE,
            text=True,
        )
        own = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 30
        # Until unshare has made the namespace, nsenter would enter ours: mount nothing before.
        while self._namespace() == own:
            if self.process.poll() is not None:
                assert self.process.stderr is not None
                pytest.skip(f"no private mount namespace here: {self.process.stderr.read()}")
            if time.monotonic() > deadline:
                self.close()
                pytest.fail("unshare did not make a mount namespace within 30 s")
            time.sleep(0.01)

    def _namespace(self) -> str | None:
        try:
            return os.readlink(f"/proc/{self.process.pid}/ns/mnt")
        except OSError:
            return None

    def run(
        self, *command: str, cwd: Path = Path("/"), check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *("nsenter", f"--target={self.process.pid}", "--mount", "--"),
                *("sh", "-c", 'cd "$0" && exec "$@"', str(cwd), *command),
            ],
            capture_output=True,
            text=True,
            check=check,
            timeout=600,
        )

    def cli(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """The real `tfjs-build` command, seeing this namespace's mounts."""
        return no_internal_error(self.run(sys.executable, "-m", "tfjsbuild", *args, cwd=cwd))

    def mount(self, *args: str) -> None:
        self.run("mount", *args, check=True)

    def fill(self, folder: Path) -> None:
        """Fill the filesystem holding `folder` (dd stops at ENOSPC)."""
        result = self.run("dd", "if=/dev/zero", f"of={folder / 'filler'}", "bs=4096")
        assert "No space left on device" in result.stderr, result.stderr

    def path(self, path: Path) -> Path:
        """`path` as this namespace sees it, for the test to read."""
        return Path(f"/proc/{self.process.pid}/root{path}")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def namespace(tmp_path: Path) -> Iterator[MountNamespace]:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root (CI runs these tests as root)")
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("unshare and nsenter (util-linux) are not installed")
    namespace = MountNamespace()
    try:
        probe = tmp_path / "mount-probe"
        probe.mkdir()
        tried = namespace.run("mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(probe))
        if tried.returncode != 0:
            pytest.skip(f"mounting is not permitted here: {tried.stderr.strip()}")
        namespace.run("umount", str(probe), check=True)
        probe.rmdir()
        yield namespace
    finally:
        namespace.close()


def files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------ bind mounts


@pytest.mark.slow
@pytest.mark.parametrize("mounted", ["dist", "dist/m"])
def test_output_on_a_bind_mount_builds_and_is_recorded(
    namespace: MountNamespace,
    project: Callable[..., Path],
    model_store: Callable[..., Path],
    mounted: str,
) -> None:
    """Same device number, another mount: a rename across it fails (EXDEV), so staging is
    chosen by trying one (output_dir) or the staged output is copied beside it (a mount inside
    output_dir). Both a new output and one replacing the last are swapped in and recorded."""
    manifest = project(MANIFEST, {"m": model_store("constants")})
    root = manifest.parent
    shared = root / "shared"
    shared.mkdir()
    (root / mounted).mkdir(parents=True)
    namespace.mount("--bind", str(shared), str(root / mounted))
    assert os.stat(shared).st_dev == os.stat(namespace.path(root / mounted)).st_dev
    below_mount = "m/first" if mounted == "dist" else "first"
    for version in (model_store("constants"), model_store("constants", a=3.0)):
        project(MANIFEST, {"m": version})
        result = namespace.cli("run", cwd=root)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "✓ m:first → dist/m/first" in result.stdout
        state, warnings = load_state(root / STATE)
        record = state.records["m:first"]
        assert warnings == []
        assert output_change(namespace.path(root), record, namespace.path(root / "dist")) is None
        assert sorted(files(shared / below_mount)) == sorted(f.path for f in record.files)
    plan = namespace.cli("plan", cwd=root)
    assert "0 to build, 1 up to date, 0 to remove" in plan.stdout
    # No staging left anywhere: not in .tfjs-build, not in output_dir, not beside the output.
    assert sorted(os.listdir(root / ".tfjs-build")) == ["cache", "manifests"]
    assert sorted(os.listdir(root / STATE)) == [
        "lock",
        "manifest-checked",
        "state.json",
        "worker.log",
    ]
    assert sorted(os.listdir(namespace.path(root / "dist"))) == [
        "m",
        "tfjs-build.d.ts",
        "tfjs-build.js",
        "tfjs-build.json",
    ]
    assert os.listdir(namespace.path(root / "dist/m")) == ["first"]


@pytest.mark.slow
def test_an_output_folder_that_is_a_mount_point_is_refused_clearly(
    namespace: MountNamespace, project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    """A rename cannot replace a mount point (EBUSY): said so, nothing recorded or left."""
    manifest = project(MANIFEST, {"m": model_store("constants")})
    root = manifest.parent
    shared, target = root / "shared", root / "dist/m/first"
    shared.mkdir()
    target.mkdir(parents=True)
    namespace.mount("--bind", str(shared), str(target))

    result = namespace.cli("run", cwd=root)

    assert result.returncode == 1
    assert result.stdout.startswith(
        "Converting 1 signature with 1 worker, starting 1 (importing TensorFlow)\n"
        f"✗ m:first failed: output folder {target} is a mount point: outputs are replaced by "
        "renaming a new folder into place, which cannot replace a mount point; mount the "
        "folder above it instead\n"
    ), result.stdout
    assert load_state(root / STATE)[0].records == {}
    assert os.listdir(shared) == []
    assert os.listdir(namespace.path(root / "dist/m")) == ["first"]
    assert not (root / STATE / "staging").exists()


# --------------------------------------------------------------------------- read-only mounts


@pytest.mark.slow
@pytest.mark.parametrize("read_only", ["dist", "dist/m"])
def test_read_only_output_fails_clearly_and_keeps_everything(
    namespace: MountNamespace,
    project: Callable[..., Path],
    model_store: Callable[..., Path],
    read_only: str,
) -> None:
    manifest = project(MANIFEST, {"m": model_store("constants")})
    root = manifest.parent
    assert run_cli("run", cwd=root).returncode == 0
    records_before = load_state(root / STATE)[0].records
    outputs_before = files(root / "dist")
    project(MANIFEST, {"m": model_store("constants", a=3.0)})
    folder = root / read_only
    namespace.mount("--bind", str(folder), str(folder))
    namespace.mount("-o", "remount,ro,bind", str(folder))

    result = namespace.cli("run", cwd=root)

    assert result.returncode == 1
    if read_only == "dist":  # found before converting anything, when staging is chosen
        assert result.stderr == (
            f"tfjs-build: error: output folder {folder} is read-only (EROFS); {OUTPUT_REMEDY}\n"
        )
    else:  # a read-only mount inside output_dir: found when the output is swapped in
        assert result.stdout.startswith(
            "Converting 1 signature with 1 worker, starting 1 (importing TensorFlow)\n"
            f"✗ m:first failed: output folder {root / 'dist/m/first'} is read-only (EROFS); "
            f"{OUTPUT_REMEDY}\n"
        )
    # Records as they were (the stat and graph caches beside them may be refreshed).
    assert load_state(root / STATE)[0].records == records_before
    assert files(root / "dist") == outputs_before
    assert not (root / STATE / "staging").exists()
    assert not namespace.path(root / "dist/.tfjs-build-staging").exists()


# ------------------------------------------------------------------------------ symbolic links


def _linked_project(
    project: Callable[..., Path], model_store: Callable[..., Path], link: str
) -> tuple[Path, Path]:
    """Built once, then `link` (dist/m/first or dist/m) moved elsewhere and linked from there."""
    manifest = project(MANIFEST, {"m": model_store("constants")})
    root = manifest.parent
    assert tfjsbuild.build([manifest], jobs=1).ok
    elsewhere = root / "elsewhere"
    (root / link).rename(elsewhere)
    (root / link).symlink_to(elsewhere)
    return manifest, elsewhere


@pytest.mark.slow
@pytest.mark.parametrize(
    ("link", "why"),
    [
        (
            "dist/m/first",
            "is a symbolic link (to {elsewhere}): outputs are replaced by renaming a new folder "
            "into place, which would replace the link, not the folder it points to",
        ),
        (
            "dist/m",
            "lies under {root}/dist/m, a symbolic link (to {elsewhere}): outputs are written "
            "only into real folders below output_dir, never through a link to elsewhere",
        ),
    ],
)
def test_a_symlinked_output_folder_is_refused_before_converting(
    project: Callable[..., Path], model_store: Callable[..., Path], link: str, why: str
) -> None:
    """Neither followed nor replaced: the link, what it points to and the state stay as they
    were, and nothing is converted (never "swapped in but failed", never half-recorded)."""
    manifest, elsewhere = _linked_project(project, model_store, link)
    root = manifest.parent
    records_before = load_state(root / STATE)[0].records
    linked_before = files(elsewhere)
    project(MANIFEST, {"m": model_store("constants", a=3.0)})

    result = run_cli("run", cwd=root)

    assert result.returncode == 1
    message = why.format(elsewhere=elsewhere, root=root)
    assert result.stdout.startswith(
        f"✗ m:first failed: tfjs-build.yaml:7:18: models.m.signatures[0]: output folder "
        f"{root / 'dist/m/first'} {message}. Replace the link by a real folder, or point "
        "output_dir (which may be a link) where the outputs should go\n"
        "    7 |     signatures: [first]\n"
        "      |                  ^\n"
        "1 failed in "
    ), result.stdout
    assert (root / link).readlink() == elsewhere
    assert files(elsewhere) == linked_before
    # The record now points through a link: read back untrusted, it is dropped (deleting
    # nothing), and the state is otherwise as it was.
    assert set(records_before) == {"m:first"}
    assert load_state(root / STATE)[0].records == {}
    assert result.stderr == (
        f"warning: {root / STATE / 'state.json'}: record m:first dropped: "
        f"signatures.m:first.output: {root / link} is a symbolic link; it will be rebuilt\n"
    )
    assert not (root / STATE / "staging").exists()


@pytest.mark.slow
def test_a_symlinked_output_dir_is_resolved_and_builds(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    """A linked output_dir (common in monorepos) keeps working: it is resolved once."""
    manifest = project(MANIFEST, {"m": model_store("constants")})
    root = manifest.parent
    (root / "deploy").mkdir()
    (root / "dist").symlink_to(root / "deploy")
    result = tfjsbuild.build([manifest], jobs=1)
    assert [r.status for r in result.results] == ["built"]
    record = load_state(root / STATE)[0].records["m:first"]
    assert record.output == "deploy/m/first"
    assert sorted(files(root / "deploy")) == [
        "m/first/group1-shard1of1.bin",
        "m/first/model.json",
        "tfjs-build.d.ts",
        "tfjs-build.js",
        "tfjs-build.json",
    ]
    assert (root / "dist").is_symlink()
    assert [r.status for r in tfjsbuild.build([manifest], jobs=1).results] == ["up-to-date"]


def test_swap_directory_refuses_a_link_before_moving_anything(tmp_path: Path) -> None:
    staged, real, link = tmp_path / "staged", tmp_path / "real", tmp_path / "link"
    staged.mkdir()
    (staged / "model.json").write_text("new")
    real.mkdir()
    (real / "model.json").write_text("old")
    link.symlink_to(real)
    with pytest.raises(OSError) as raised:
        swap_directory(staged, link)
    assert raised.value.errno == errno.ELOOP and raised.value.filename == str(link)
    assert link.readlink() == real
    assert (real / "model.json").read_text() == "old"
    assert (staged / "model.json").read_text() == "new"


# --------------------------------------------------------------------------------- full disks


def test_validate_and_plan_work_with_a_full_state_folder(
    namespace: MountNamespace, project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    """The schema memo is an optimisation: a full disk only means it is not written."""
    manifest = project(MANIFEST, {"m": model_store("constants")})
    root = manifest.parent
    state_dir = root / STATE
    state_dir.mkdir(parents=True)
    namespace.mount("-t", "tmpfs", "-o", "size=16k", "tmpfs", str(state_dir))
    namespace.fill(state_dir)

    validated = namespace.cli("validate", cwd=root)
    planned = namespace.cli("plan", cwd=root)

    assert (validated.returncode, validated.stdout, validated.stderr) == (
        0,
        "tfjs-build.yaml: ok (1 model)\n",
        "",
    )
    assert planned.returncode == 0, planned.stderr
    assert "1 to build, 0 up to date, 0 to remove" in planned.stdout
    assert os.listdir(namespace.path(state_dir)) == ["filler"]  # no memo, no temporary file


@pytest.mark.slow
def test_run_with_a_full_state_folder_records_nothing_then_recovers(
    namespace: MountNamespace, project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(MANIFEST, {"m": model_store("constants")})
    root = manifest.parent
    state_dir = root / STATE
    state_file = state_dir / "state.json"
    state_dir.mkdir(parents=True)
    namespace.mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(state_dir))
    assert namespace.cli("run", cwd=root).returncode == 0
    state_before = namespace.path(state_file).read_bytes()
    project(MANIFEST, {"m": model_store("constants", a=3.0)})
    namespace.fill(state_dir)

    failed = namespace.cli("run", cwd=root)

    assert failed.returncode == 1
    assert failed.stderr == (
        f"tfjs-build: error: cannot write {state_file}: state folder {state_dir}: no space left "
        "on device (ENOSPC); free space there and run again; the next run checks again what "
        "this one built but could not record\n"
    )
    assert namespace.path(state_file).read_bytes() == state_before  # whole, not truncated
    assert not [n for n in os.listdir(namespace.path(state_dir)) if n.startswith(".")]
    # The new output was swapped in before the state write failed: the next plan rebuilds it.
    assert "1 to build, 0 up to date, 0 to remove" in namespace.cli("plan", cwd=root).stdout

    namespace.path(state_dir / "filler").unlink()
    rebuilt = namespace.cli("run", cwd=root)
    again = namespace.cli("run", cwd=root)

    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "✓ m:first → dist/m/first" in rebuilt.stdout
    assert again.returncode == 0 and "Converting" not in again.stdout, again.stdout
    state, warnings = load_state(namespace.path(state_dir))
    assert warnings == []
    assert output_change(root, state.records["m:first"], root / "dist") is None


def test_lock_and_schema_memo_on_a_disk_without_room_for_a_file(
    namespace: MountNamespace, project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    """No inode left: the memo's temporary file cannot be made (ignored), nor the lock."""
    manifest = project(MANIFEST, {"m": model_store("constants")})
    root = manifest.parent
    state_dir = root / STATE
    state_dir.mkdir(parents=True)
    namespace.mount("-t", "tmpfs", "-o", "size=16k,nr_inodes=1", "tmpfs", str(state_dir))

    validated = namespace.cli("validate", cwd=root)
    ran = namespace.cli("run", cwd=root)

    assert (validated.returncode, validated.stderr) == (0, "")
    assert (ran.returncode, ran.stdout) == (1, "")
    assert ran.stderr == (
        f"tfjs-build: error: cannot create the lock {state_dir / 'lock'}: state folder "
        f"{state_dir}: no space left on device (ENOSPC); free space there and run again\n"
    )


def test_staging_on_a_full_output_disk_fails_before_converting(
    namespace: MountNamespace, project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    """.tfjs-build on another mount than output_dir: staging goes beside the outputs, and a
    full output disk is reported there, before any worker starts."""
    manifest = project(MANIFEST, {"m": model_store("constants")})
    root = manifest.parent
    output_dir = root / "dist"
    output_dir.mkdir()
    namespace.mount("-t", "tmpfs", "-o", "size=16k,nr_inodes=1", "tmpfs", str(output_dir))

    result = namespace.cli("run", cwd=root)

    assert result.returncode == 1
    assert result.stderr == (
        f"tfjs-build: error: output folder {output_dir}: no space left on device (ENOSPC); "
        "free space there and run again\n"
    )
    assert "✓" not in result.stdout
    assert os.listdir(namespace.path(output_dir)) == []
    assert os.listdir(root / STATE) == ["lock"]  # no state, no staging, no log


def test_write_atomically_on_a_full_disk_keeps_the_old_file_and_no_temporary(
    namespace: MountNamespace, tmp_path: Path
) -> None:
    folder = tmp_path / "small"
    folder.mkdir()
    namespace.mount("-t", "tmpfs", "-o", "size=16k", "tmpfs", str(folder))
    script = (
        "import sys; from pathlib import Path; from tfjsbuild.files.atomic import write_atomically\n"
        f"path = Path({str(folder / 'state.json')!r})\n"
        "write_atomically(path, 'old')\n"
        "try:\n"
        "    write_atomically(path, 'x' * 65536)\n"
        "except OSError as error:\n"
        "    print(error.errno)\n"
    )
    result = namespace.run(sys.executable, "-c", script, check=True)
    assert result.stdout == f"{errno.ENOSPC}\n"
    assert os.listdir(namespace.path(folder)) == ["state.json"]
    assert namespace.path(folder / "state.json").read_text() == "old"


@pytest.mark.slow
def test_clean_on_a_read_only_output_is_a_clear_error_not_a_bug(
    namespace: MountNamespace, project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    # The safety net in `cli`: a refusal no command worded itself is still exit 1, not 3.
    manifest = project(MANIFEST, {"m": model_store("constants")})
    root = manifest.parent
    assert run_cli("run", cwd=root).returncode == 0
    outputs_before = files(root / "dist")
    state_before = (root / STATE / "state.json").read_bytes()
    folder = root / "dist"
    namespace.mount("--bind", str(folder), str(folder))
    namespace.mount("-o", "remount,ro,bind", str(folder))

    result = namespace.cli("clean", cwd=root)

    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        f"tfjs-build: error: {folder / 'tfjs-build.json'}: Read-only file system (EROFS); "
        "the filesystem refused: free space there or make it writable, then run again\n"
    )
    assert files(root / "dist") == outputs_before
    assert (root / STATE / "state.json").read_bytes() == state_before
