"""What changed between two ml_dtypes releases, format by format, over every input.

For every dtype both releases have, each release (installed into its own scratch
folder with `pip install --target`, both against the same numpy) encodes all 2^32
float32 bit patterns, and decodes every code of the formats up to 16 bits. Each
worker hashes its output chunk by chunk; only chunks whose hashes differ are
fetched and compared element by element, and every differing input is put in a
class (its sign, its float32 kind, where it lies against the format's range) with
the old and new code.

    .venv/bin/python benchmarks/ml_dtypes_versions.py --old 0.6.0 --new 0.7.0

writes benchmarks/results/ml_dtypes_versions.md (about 15 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, write_result

CHUNK = 1 << 24
CHIPFIT_NAMES = {  # ml_dtypes names chipfit also registers (numpy's float16 is not ml_dtypes')
    "bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
    "float6_e3m2fn", "float6_e2m3fn", "float4_e2m1fn", "int4", "uint4", "int2",
}  # fmt: skip

WORKER = r"""
import hashlib, struct, sys
import numpy as np
import ml_dtypes

out = sys.stdout.buffer
names = sorted(n for n in dir(ml_dtypes) if not n.startswith("_") and isinstance(getattr(ml_dtypes, n), type)
               and n not in ("finfo", "iinfo") and "complex" not in n)
def send(b):
    out.write(struct.pack("<Q", len(b))); out.write(b); out.flush()
send((ml_dtypes.__version__ + " " + " ".join(names)).encode())
for line in sys.stdin:
    op, name, start, count = line.split()
    dt = getattr(ml_dtypes, name)
    start, count = int(start), int(count)
    if op in ("enc", "encraw"):
        x = np.arange(start, start + count, dtype=np.uint64).astype(np.uint32).view(np.float32)
        with np.errstate(all="ignore"):
            y = x.astype(dt)
        raw = y.view(np.uint8 if y.itemsize == 1 else np.uint16).tobytes()
    else:  # dec: every code of the format
        codes = np.arange(start, start + count, dtype=np.uint32).astype(np.uint8 if count <= 256 else np.uint16)
        with np.errstate(all="ignore"):
            raw = codes.view(dt).astype(np.float32).view(np.uint32).tobytes()
    send(hashlib.blake2b(raw, digest_size=16).digest() if op == "enc" else raw)
"""


class Worker:
    def __init__(self, version: str, root: Path) -> None:
        target = root / version
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(target), f"ml_dtypes=={version}",
             f"numpy=={np.__version__}"],
            check=True,
        )  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        )
        head = self._recv().decode().split()
        self.version, self.names = head[0], set(head[1:])

    def _recv(self) -> bytes:
        assert self.proc.stdout is not None
        (n,) = struct.unpack("<Q", self.proc.stdout.read(8))
        return self.proc.stdout.read(n)

    def ask(self, op: str, name: str, start: int, count: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{op} {name} {start} {count}\n".encode())
        self.proc.stdin.flush()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


KINDS = ("zero", "f32-subnormal", "normal", "inf", "nan")
PLACES = ("", "below min subnormal", "format subnormal", "in range", "above max")


def kind_of(bits: np.ndarray) -> np.ndarray:
    """Index into KINDS of each float32 bit pattern."""
    exp = (bits >> 23) & 0xFF
    man = bits & 0x7FFFFF
    kinds = np.full(bits.shape, 2, dtype=np.int64)
    kinds[(exp == 0) & (man == 0)] = 0
    kinds[(exp == 0) & (man != 0)] = 1
    kinds[(exp == 0xFF) & (man == 0)] = 3
    kinds[(exp == 0xFF) & (man != 0)] = 4
    return kinds


def place_of(bits: np.ndarray, name: str) -> np.ndarray:
    """Index into PLACES: where |x| lies against the format's range (this venv's finfo/iinfo)."""
    import ml_dtypes

    x = np.abs(bits.view(np.float32).astype(np.float64))
    place = np.zeros(bits.shape, dtype=np.int64)
    dt = getattr(ml_dtypes, name, None)
    if dt is None:
        return place
    if name.startswith(("int", "uint")):
        place[x <= ml_dtypes.iinfo(dt).max] = 3
        place[x > ml_dtypes.iinfo(dt).max] = 4
        return place
    fi = ml_dtypes.finfo(dt)
    place[x < float(fi.smallest_subnormal)] = 1
    place[(x >= float(fi.smallest_subnormal)) & (x < float(fi.smallest_normal))] = 2
    place[(x >= float(fi.smallest_normal)) & (x <= float(fi.max))] = 3
    place[x > float(fi.max)] = 4
    return place


def compare_encode(old: Worker, new: Worker, name: str) -> tuple[int, list[tuple[str, int, int, str]]]:
    """Count and classes of float32 inputs whose encoding differs (grouped with numpy:
    a class is (sign, float32 kind, place in the format's range, old code, new code))."""
    counts: dict[int, int] = {}
    ranges: dict[int, tuple[int, int]] = {}
    total = 0
    for start in range(0, 1 << 32, CHUNK):
        old.ask("enc", name, start, CHUNK)
        new.ask("enc", name, start, CHUNK)
        if old._recv() == new._recv():
            continue
        old.ask("encraw", name, start, CHUNK)
        new.ask("encraw", name, start, CHUNK)
        a, b = old._recv(), new._recv()
        wide = len(a) > CHUNK
        av = np.frombuffer(a, np.uint16 if wide else np.uint8).astype(np.int64)
        bv = np.frombuffer(b, np.uint16 if wide else np.uint8).astype(np.int64)
        idx = np.nonzero(av != bv)[0]
        total += idx.size
        bits = (np.uint64(start) + idx.astype(np.uint64)).astype(np.uint32)
        kinds = kind_of(bits)
        places = np.where(kinds >= 3, 0, place_of(bits, name))
        places[kinds == 0] = 0
        keys = ((bits >> 31).astype(np.int64) << 40) | (kinds << 36) | (places << 32) | (av[idx] << 16) | bv[idx]
        order = np.argsort(keys, kind="stable")
        uk, first, n = np.unique(keys[order], return_index=True, return_counts=True)
        sb = bits[order]
        lo = np.minimum.reduceat(sb, first)
        hi = np.maximum.reduceat(sb, first)
        for k, c, lo_, hi_ in zip(uk.tolist(), n.tolist(), lo.tolist(), hi.tolist(), strict=True):
            counts[k] = counts.get(k, 0) + c
            plo, phi = ranges.get(k, (lo_, hi_))
            ranges[k] = (min(plo, lo_), max(phi, hi_))
    rows = []
    for k, c in sorted(counts.items(), key=lambda kv: -kv[1]):
        sign = "-" if (k >> 40) & 1 else "+"
        kind, place = KINDS[(k >> 36) & 0xF], PLACES[(k >> 32) & 0xF]
        lo, hi = ranges[k]
        label = f"{sign} {kind}" + (f", {place}" if place else "")
        rows.append((label, c, (k >> 16) & 0xFFFF, f"0x{k & 0xFFFF:x} (inputs 0x{lo:08x}..0x{hi:08x})"))
    return total, rows


def compare_decode(old: Worker, new: Worker, name: str, ncodes: int) -> list[tuple[int, int, int]]:
    old.ask("dec", name, 0, ncodes)
    new.ask("dec", name, 0, ncodes)
    a = np.frombuffer(old._recv(), np.uint32)
    b = np.frombuffer(new._recv(), np.uint32)
    return [(int(c), int(a[c]), int(b[c])) for c in np.nonzero(a != b)[0]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", default="0.6.0")
    p.add_argument("--new", default="0.7.0")
    p.add_argument("--only", nargs="*", help="dtype names (default: every dtype both releases have)")
    args = p.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        old, new = Worker(args.old, Path(tmp)), Worker(args.new, Path(tmp))
        common = sorted(old.names & new.names)
        names = args.only or common
        lines = [
            f"# ml_dtypes {old.version} against {new.version}, every input",
            "",
            f"Machine: {machine()}. Both releases against numpy {np.__version__}.",
            "",
            f"Command: `.venv/bin/python benchmarks/ml_dtypes_versions.py --old {args.old} --new {args.new}`.",
            "",
            "Encode: all 2^32 float32 bit patterns cast with `astype(dtype)`. Decode: every code cast to float32.",
            "Formats chipfit registers are marked *. Codes are the raw storage bits.",
            f"Only in {old.version}: {', '.join(sorted(old.names - new.names)) or 'none'}; "
            f"only in {new.version}: {', '.join(sorted(new.names - old.names)) or 'none'}.",
            "",
            "| dtype | encode: inputs that differ | decode: codes that differ |",
            "|---|---|---|",
        ]
        details: list[str] = []
        for name in names:
            t = time.perf_counter()
            total, rows = compare_encode(old, new, name)
            probe = np.zeros(1, dtype=np.float32)
            import ml_dtypes

            width = probe.astype(getattr(ml_dtypes, name)).itemsize if hasattr(ml_dtypes, name) else 1
            dec = compare_decode(old, new, name, 1 << (8 * width))
            mark = "*" if name in CHIPFIT_NAMES else ""
            lines.append(f"| {name}{mark} | {total:,} | {len(dec)} |")
            took = time.perf_counter() - t
            print(f"{name}: {total} encode, {len(dec)} decode differences ({took:.0f} s)", flush=True)
            if rows or dec:
                details += [f"## {name}{mark}", ""]
            if rows:
                details += [
                    f"Encode: {total:,} inputs in {len(rows)} classes (largest first; at most 40 shown).",
                    "",
                    f"| input class | inputs | {old.version} code | {new.version} code (input range) |",
                    "|---|---|---|---|",
                ]
                details += [f"| {c} | {n:,} | 0x{a:x} | {b} |" for c, n, a, b in rows[:40]]
                details.append("")
            if dec:
                details += [
                    f"Decode: {len(dec)} codes (at most 40 shown).",
                    "",
                    f"| code | {old.version} float32 bits | {new.version} float32 bits |",
                    "|---|---|---|",
                ]
                details += [f"| 0x{c:x} | 0x{a:08x} | 0x{b:08x} |" for c, a, b in dec[:40]]
                details.append("")
        old.close()
        new.close()
    lines += ["", f"Wall time {time.perf_counter() - t0:.0f} s.", "", *details]
    write_result("ml_dtypes_versions.md", "\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'ml_dtypes_versions.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
