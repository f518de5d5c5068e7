"""Check an installed environment against the lock file (requirements.lock).

    python tools/lockcheck.py requirements.lock          # fail unless installed == locked
    python tools/lockcheck.py --diff requirements.lock   # only list what differs (make test-latest)

The strict check fails, naming each package, when a locked package is missing
or at another version, when something not in the lock is installed, or when the
lock no longer satisfies what pyproject.toml asks for (then: `make lock`).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
PROJECT = "chipfit"


def read_lock(text: str) -> dict[str, str]:
    """name -> version for every `name==version` line of a pip requirements lock."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        m = PIN.match(line.strip())
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def installed() -> dict[str, str]:
    """name -> version of every distribution in this interpreter's environment."""
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def project_requirements(pyproject: Mapping[str, object], extras: Iterable[str]) -> list[Requirement]:
    """The project's dependencies plus those of `extras`, self-references (chipfit[x]) expanded."""
    proj = pyproject["project"]
    assert isinstance(proj, dict)
    optional: dict[str, list[str]] = proj.get("optional-dependencies", {})
    reqs: list[Requirement] = []
    todo, seen = list(extras), set()
    for spec in proj.get("dependencies", []):
        reqs.append(Requirement(spec))
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            raise SystemExit(f"lockcheck: pyproject.toml has no extra {extra!r}; known: {', '.join(optional)}")
        for spec in optional[extra]:
            r = Requirement(spec)
            if canonicalize_name(r.name) == PROJECT:
                todo.extend(r.extras)
            else:
                reqs.append(r)
    return reqs


def problems(lock: Mapping[str, str], have: Mapping[str, str], wanted: Iterable[Requirement]) -> list[str]:
    """Every way `have` (installed) differs from `lock`, and every requirement the lock misses."""
    out = []
    for name, version in sorted(lock.items()):
        if name not in have:
            out.append(f"{name}: locked {version}, not installed")
        elif Version(have[name]) != Version(version):
            out.append(f"{name}: locked {version}, installed {have[name]}")
    out += [f"{name}: installed {v}, not in the lock" for name, v in sorted(have.items()) if name not in lock]
    env = {**default_environment(), "extra": ""}
    for req in wanted:
        name = canonicalize_name(req.name)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        if name not in lock:
            out.append(f"{name}: pyproject.toml asks for {req}, the lock has none (run `make lock`)")
        elif not req.specifier.contains(lock[name], prereleases=True):
            out.append(f"{name}: pyproject.toml asks for {req}, the lock has {lock[name]} (run `make lock`)")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("lock", type=Path)
    p.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    p.add_argument("--extras", default="dev", help="comma-separated extras the lock covers (default: dev)")
    p.add_argument("--diff", action="store_true", help="list the differences and exit 0")
    args = p.parse_args(argv)
    lock = read_lock(args.lock.read_text())
    have = {k: v for k, v in installed().items() if k != PROJECT}
    if args.diff:
        moved = [f"{n}: locked {lock[n]}, here {have[n]}" for n in sorted(lock) if n in have and have[n] != lock[n]]
        added = [f"{n}: here {have[n]}, not in the lock" for n in sorted(have) if n not in lock]
        print("\n".join(["versions that differ from the lock:", *(moved + added or ["none"])]))
        return 0
    wanted = project_requirements(tomllib.loads(args.pyproject.read_text()), args.extras.split(","))
    found = problems(lock, have, wanted)
    if found:
        print(f"lockcheck: this environment does not match {args.lock}:", file=sys.stderr)
        print("\n".join(f"  {f}" for f in found), file=sys.stderr)
        return 1
    print(f"lockcheck: {len(lock)} packages installed exactly as {args.lock} locks them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
