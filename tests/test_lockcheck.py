"""tools/lockcheck.py: what `make setup` checks after installing from requirements.lock."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("lockcheck", ROOT / "tools" / "lockcheck.py")
assert _spec is not None and _spec.loader is not None
lockcheck = importlib.util.module_from_spec(_spec)
sys.modules["lockcheck"] = lockcheck
_spec.loader.exec_module(lockcheck)

LOCK = """\
# header
--find-links /opt/wheels

ml-dtypes==0.7.0 \\
    --hash=sha256:aa \\
    --hash=sha256:bb
    # via chipfit (pyproject.toml)
Torch==2.13.0+cpu \\
    --hash=sha256:cc
numpy==2.4.6 ; python_version >= "3.11" \\
    --hash=sha256:dd
"""

PYPROJECT = {
    "project": {
        "dependencies": ["torch==2.13.0", "numpy>=1.26,<2.6", "colorama; sys_platform == 'win32'"],
        "optional-dependencies": {"test": ["ml_dtypes>=0.6"], "dev": ["chipfit[test]"]},
    }
}


def test_read_lock_takes_every_pin_with_canonical_names() -> None:
    assert lockcheck.read_lock(LOCK) == {"ml-dtypes": "0.7.0", "torch": "2.13.0+cpu", "numpy": "2.4.6"}


def test_the_real_lock_pins_every_package_once_with_hashes() -> None:
    text = (ROOT / "requirements.lock").read_text()
    pins = lockcheck.read_lock(text)
    entries = [line for line in text.splitlines() if lockcheck.PIN.match(line)]
    assert len(entries) == len(pins)  # no package twice
    assert all(line.rstrip().endswith("\\") for line in entries)  # each pin continues with its hashes
    assert pins["torch"] == "2.13.0+cpu"  # the local CPU build, never PyPI's CUDA one
    wanted = lockcheck.project_requirements(tomllib.loads((ROOT / "pyproject.toml").read_text()), ["dev"])
    assert lockcheck.problems(pins, pins, wanted) == []  # the committed lock satisfies pyproject.toml


def test_extras_expand_through_self_references() -> None:
    reqs = lockcheck.project_requirements(PYPROJECT, ["dev"])
    assert sorted(r.name for r in reqs) == ["colorama", "ml_dtypes", "numpy", "torch"]
    with pytest.raises(SystemExit, match="no extra 'docs'; known: test, dev"):
        lockcheck.project_requirements(PYPROJECT, ["docs"])


def test_an_exact_environment_passes() -> None:
    lock = lockcheck.read_lock(LOCK)
    wanted = lockcheck.project_requirements(PYPROJECT, ["dev"])
    assert lockcheck.problems(lock, dict(lock), wanted) == []  # colorama's marker is false here


def test_every_kind_of_drift_is_named() -> None:
    lock = lockcheck.read_lock(LOCK)
    have = {"ml-dtypes": "0.6.0", "torch": "2.13.0+cpu", "rich": "14.0"}  # numpy missing, rich extra
    wanted = [Requirement("numpy>=2.5"), Requirement("ml_dtypes>=0.6"), Requirement("hypothesis")]
    assert lockcheck.problems(lock, have, wanted) == [
        "ml-dtypes: locked 0.7.0, installed 0.6.0",
        "numpy: locked 2.4.6, not installed",
        "rich: installed 14.0, not in the lock",
        "numpy: pyproject.toml asks for numpy>=2.5, the lock has 2.4.6 (run `make lock`)",
        "hypothesis: pyproject.toml asks for hypothesis, the lock has none (run `make lock`)",
    ]


def test_main_fails_naming_the_drift_and_diff_only_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("not-a-real-package-xyz==1.0 \\\n    --hash=sha256:00\n")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[project]\ndependencies = []\n[project.optional-dependencies]\ndev = []\n")
    assert lockcheck.main([str(lock), "--pyproject", str(pyproject)]) == 1
    err = capsys.readouterr().err
    assert "not-a-real-package-xyz: locked 1.0, not installed" in err
    assert "torch: installed 2.13.0+cpu, not in the lock" in err
    assert lockcheck.main([str(lock), "--diff"]) == 0
    assert "torch: here 2.13.0+cpu, not in the lock" in capsys.readouterr().out
