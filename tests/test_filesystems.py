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

from tfjsbuild.atomic import swap_directory
from tfjsbuild.state import load_state, output_change

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
        return self.run(sys.executable, "-m", "tfjsbuild", *args, cwd=cwd)

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


# ------------------------------------------------------------------------------ symbolic links


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
    state_dir = root / ".tfjs-build"
    state_dir.mkdir()
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
    state_dir = root / ".tfjs-build"
    state_file = state_dir / "state.json"
    state_dir.mkdir()
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
    state, warning = load_state(namespace.path(state_dir))
    assert warning is None
    assert output_change(root, state.records["m:first"]) is None


def test_lock_and_schema_memo_on_a_disk_without_room_for_a_file(
    namespace: MountNamespace, project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    """No inode left: the memo's temporary file cannot be made (ignored), nor the lock."""
    manifest = project(MANIFEST, {"m": model_store("constants")})
    root = manifest.parent
    state_dir = root / ".tfjs-build"
    state_dir.mkdir()
    namespace.mount("-t", "tmpfs", "-o", "size=16k,nr_inodes=1", "tmpfs", str(state_dir))

    validated = namespace.cli("validate", cwd=root)
    ran = namespace.cli("run", cwd=root)

    assert (validated.returncode, validated.stderr) == (0, "")
    assert (ran.returncode, ran.stdout) == (1, "")
    assert ran.stderr == (
        f"tfjs-build: error: cannot create the lock {state_dir / 'lock'}: state folder "
        f"{state_dir}: no space left on device (ENOSPC); free space there and run again\n"
    )


def test_write_atomically_on_a_full_disk_keeps_the_old_file_and_no_temporary(
    namespace: MountNamespace, tmp_path: Path
) -> None:
    folder = tmp_path / "small"
    folder.mkdir()
    namespace.mount("-t", "tmpfs", "-o", "size=16k", "tmpfs", str(folder))
    script = (
        "import sys; from pathlib import Path; from tfjsbuild.atomic import write_atomically\n"
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
