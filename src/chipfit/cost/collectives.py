"""Collective communication priced by its algorithm: alpha + bytes / beta per step.

Every collective over n chips runs as a sequence of steps; a step costs the link's per-message
latency alpha (plus hop latency on a direct network) and its bytes over the per-chip, per-direction
bandwidth beta, and the collective pays the link's fixed `collective_latency_s` once (NCCL's
baseLat: launching it). This is NCCL's own cost model (src/graph/tuning.cc). S is the full
buffer a chip holds (all-reduce: the tensor reduced; all-gather: the gathered result;
reduce-scatter: the input; all-to-all: what one chip sends in total).

| collective | ring | tree (double binary tree, as NCCL) |
|---|---|---|
| all-reduce | 2 (n - 1) steps of S / n: 2 (n - 1) alpha + 2 (n - 1) / n S / beta | 2 ceil(log2 n) alpha + 2 S / beta |
| all-gather, reduce-scatter | (n - 1) steps of S / n | - |
| all-to-all | (n - 1) pairwise exchanges of S / n | - |
| send/recv | one step of S | - |

References: Thakur, Rabenseifner & Gropp, "Optimization of Collective Communication Operations
in MPICH" (IJHPCA 2005) for the ring and tree costs; NCCL picks ring or tree per size, so
`Algorithm.AUTO` takes the cheaper of the two.

Beyond a fast domain (`Fabric.domain_chips`: an 8-GPU NVLink board, a TPU pod's torus) a
collective is hierarchical, as NCCL and XLA run it: all-reduce = reduce-scatter inside each
domain on the fast link, all-reduce of S / d across the n / d domains on the scale-out network
(each chip its own share of the NICs), all-gather inside the domain. The other collectives,
assumed: the flat algorithm at the slower network's alpha and beta.

Direct networks (torus): a ring embeds with neighbour steps (one hop); a tree step spans on
average diameter / log2(n) hops (assumed), each adding the link's `hop_latency_s`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from chipfit.errors import InputError
from chipfit.hardware.device import Device, Link

__all__ = ["Algorithm", "Collective", "Fabric", "collective_s", "flat_collective_s"]


class Collective(StrEnum):
    ALL_REDUCE = "all-reduce"
    ALL_GATHER = "all-gather"
    REDUCE_SCATTER = "reduce-scatter"
    ALL_TO_ALL = "all-to-all"
    SEND_RECV = "send-recv"


class Algorithm(StrEnum):
    AUTO = "auto"  # the cheaper of ring and tree, as NCCL chooses
    RING = "ring"
    TREE = "tree"


def _torus_dims(topology: str) -> int:
    return {"torus-2d": 2, "torus-3d": 3, "mesh": 2}.get(topology, 0)


def _alpha(link: Link, n: int, algorithm: Algorithm) -> float:
    """One step's latency: the message latency plus the hops a step crosses on a direct network."""
    dims = _torus_dims(link.topology)
    if not dims or algorithm is Algorithm.RING or n <= 2:
        return link.latency_s
    k = n ** (1 / dims)  # chips per dimension of the (assumed cubic) slice
    k = round(k) if abs(k - round(k)) < 1e-6 else k  # 4096 ** (1/3) is 15.999...
    diameter = dims * math.floor(k / 2)
    hops = max(1.0, diameter / math.ceil(math.log2(n)))
    return float(link.latency_s + (hops - 1) * link.hop_latency_s)


def flat_collective_s(
    kind: Collective, nbytes: float, n: int, link: Link, algorithm: Algorithm = Algorithm.AUTO
) -> float:
    """Seconds for one collective of `nbytes` over n chips joined by one `link`."""
    kind, algorithm = Collective(kind), Algorithm(algorithm)
    if n <= 1 or nbytes <= 0:
        return 0.0
    return link.collective_latency_s + _steps_s(kind, nbytes, n, link, algorithm)


def _steps_s(kind: Collective, nbytes: float, n: int, link: Link, algorithm: Algorithm) -> float:
    beta = link.bandwidth_bytes_per_s
    if kind is Collective.SEND_RECV:
        return link.latency_s + nbytes / beta
    if kind is Collective.ALL_REDUCE:
        ring = 2 * (n - 1) * (_alpha(link, n, Algorithm.RING) + nbytes / n / beta)
        tree = 2 * math.ceil(math.log2(n)) * _alpha(link, n, Algorithm.TREE) + 2 * nbytes / beta
        if algorithm is Algorithm.RING:
            return ring
        if algorithm is Algorithm.TREE:
            return tree
        return min(ring, tree)
    if algorithm is Algorithm.TREE:
        raise InputError(f"{kind} has a ring algorithm only; known for it: auto, ring")
    return (n - 1) * (_alpha(link, n, Algorithm.RING) + nbytes / n / beta)


@dataclass(frozen=True, kw_only=True)
class Fabric:
    """How n chips of one device connect: the fast domain and the network between domains."""

    fast: Link | None
    scale_out: Link | None = None

    @classmethod
    def of(cls, device: Device) -> Fabric:
        return cls(fast=device.interconnect, scale_out=device.scale_out)

    @property
    def domain_chips(self) -> int:
        """Chips one fast domain holds (0: unbounded, the fast link reaches every chip)."""
        return self.fast.domain_chips if self.fast is not None else 1

    def reach(self, n: int) -> str:
        """'' when n chips can be joined, else why not (one line)."""
        if n <= 1 or self.within_domain(n) or self.scale_out is not None:
            return ""
        if self.fast is None:
            return "no chip-to-chip interconnect in the catalog"
        return f"{n} chips exceed the {self.domain_chips}-chip fast domain and the catalog has no scale-out network"

    def within_domain(self, n: int) -> bool:
        d = self.domain_chips
        return self.fast is not None and (d == 0 or n <= d)

    def link_for(self, n: int) -> Link:
        """The slowest link n chips use (the fast one within a domain, else the network)."""
        if self.fast is not None and self.within_domain(n):
            return self.fast
        if self.scale_out is None:
            raise InputError(self.reach(n))
        return self.scale_out


def collective_s(
    kind: Collective, nbytes: float, n: int, fabric: Fabric, algorithm: Algorithm = Algorithm.AUTO
) -> float:
    """Seconds for one collective of `nbytes` (per chip) over n chips of `fabric`: flat within the
    fast domain, hierarchical beyond it (see the module docstring)."""
    kind = Collective(kind)
    if n <= 1 or nbytes <= 0:
        return 0.0
    link = fabric.link_for(n)  # an InputError when the fabric cannot join n chips
    fast = fabric.fast
    if link is fast or fast is None or kind is not Collective.ALL_REDUCE or fabric.domain_chips <= 1:
        return flat_collective_s(kind, nbytes, n, link, algorithm)
    net, d = link, fabric.domain_chips
    groups = math.ceil(n / d)
    inside = flat_collective_s(Collective.REDUCE_SCATTER, nbytes, d, fast, Algorithm.RING)
    across = flat_collective_s(Collective.ALL_REDUCE, nbytes / d, groups, net, algorithm)
    return 2 * inside + across  # reduce-scatter, all-reduce of one shard across domains, all-gather
