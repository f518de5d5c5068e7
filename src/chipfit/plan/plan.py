"""`Plan`: every swept configuration, the Pareto front, and one recommendation with its reasons."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

from chipfit.cost import Estimate
from chipfit.errors import InputError
from chipfit.formats import get_format
from chipfit.hardware.pricing import PriceSummary
from chipfit.plan.sweep import PlanRow
from chipfit.report.text import seconds_text

__all__ = ["OBJECTIVES", "Constraints", "Plan", "PlanError", "pareto_front", "recommend"]

# objective -> (row attribute, sign): the recommendation minimises sign * value
OBJECTIVES = {
    "latency": ("step_s", 1.0),
    "throughput": ("throughput", -1.0),
    "cost": ("usd_per_million", 1.0),
    "energy": ("energy_per_item_j", 1.0),
}
# what a configuration is judged on: more chips are a cost of their own (they are never free)
FRONT_KEYS = (
    ("step_s", 1.0),
    ("throughput", -1.0),
    ("usd_per_million", 1.0),
    ("energy_per_item_j", 1.0),
    ("accuracy_drop", 1.0),
    ("chips", 1.0),
)


class PlanError(InputError):
    """No configuration satisfies the constraints (the message says which one bit)."""


@dataclass(frozen=True)
class Constraints:
    max_latency_ms: float | None = None
    max_accuracy_drop: float | None = None  # in the metric's units (top-1: fraction; shown as points)
    max_usd_per_hour: float | None = None
    metric: str = "top1"  # what accuracy is measured in: top1/agreement drops read as points, others as is

    def violation(self, r: PlanRow) -> str:
        """'' when r satisfies every constraint, else the first it breaks, in words."""
        if not r.fits:
            return f"needs {r.memory_per_chip_bytes / 2**30:.3g} GiB per chip, has {r.capacity_bytes / 2**30:.3g}"
        if self.max_latency_ms is not None and r.latency_ms > self.max_latency_ms:
            return f"{r.latency_ms:.3g} ms per step, over your {self.max_latency_ms:g} ms"
        if (
            self.max_accuracy_drop is not None
            and r.accuracy_drop is not None
            and (r.accuracy_drop > self.max_accuracy_drop)
        ):
            drop, budget = _acc(r.accuracy_drop, self.metric), _acc(self.max_accuracy_drop, self.metric)
            return f"loses {drop}, over your budget of {budget}"
        if self.max_usd_per_hour is not None and r.usd_per_hour is not None and r.usd_per_hour > self.max_usd_per_hour:
            return f"${r.usd_per_hour:.3g}/h, over your ${self.max_usd_per_hour:g}/h"
        if self.max_usd_per_hour is not None and r.usd_per_hour is None:
            return "has no price on the chosen basis"
        return ""


def _acc(drop: float, metric: str) -> str:
    from chipfit.report.text import metric_unit

    u = metric_unit(metric)
    return f"{u.shown(drop):.2f} points" if u.drop_unit == "points" else f"{drop:.3g} of {metric}"


def _value(r: PlanRow, key: str) -> float:
    v = getattr(r, key)
    return math.inf if v is None else float(v)


def _front_point(r: PlanRow) -> tuple[float, ...]:
    return tuple(sign * _value(r, k) for k, sign in FRONT_KEYS)


def rank_key(r: PlanRow, objective: str) -> tuple[Any, ...]:
    """The recommendation's order: the objective, then energy per item, then fewer chips, then the
    other front keys (so the first row is never dominated: it is on the front), then a native
    precision over a compiler cast, then the label (deterministic)."""
    key, sign = OBJECTIVES[objective]
    first = (key, "energy_per_item_j", "chips")
    rest = [sign_k * _value(r, k) for k, sign_k in FRONT_KEYS if k not in first]
    return (sign * _value(r, key), _value(r, "energy_per_item_j"), r.chips, *rest, r.how != "native", r.label())


def pareto_front(rows: list[PlanRow], constraints: Constraints | None = None) -> list[PlanRow]:
    """Rows no other row beats on every one of latency, throughput, cost per item, energy per item,
    accuracy drop and chip count (missing values count as worst), among the rows that fit (and, given
    `constraints`, meet them: the recommendation is always one of these)."""
    ok = [r for r in rows if r.fits and not (constraints is not None and constraints.violation(r))]
    # sort-filter skyline: in lexicographic order a dominating point always comes first, and a point
    # dominated by anything is dominated by a point already on the front (dominance is transitive), so
    # each point is checked against the front only (n x front, not n^2: 4,204 rows in 0.1 s, not 15)
    pts = sorted(((_front_point(r), i, r) for i, r in enumerate(ok)), key=lambda t: (t[0], t[1]))
    front: list[tuple[tuple[float, ...], int, PlanRow]] = []
    for p, i, r in pts:
        if not any(_dominates(q, p) for q, _, _ in front):
            front.append((p, i, r))
    return sorted((r for _, _, r in sorted(front, key=lambda t: t[1])), key=lambda r: r.step_s)


def _dominates(q: tuple[float, ...], p: tuple[float, ...]) -> bool:
    return q != p and all(a <= b for a, b in zip(q, p, strict=True))


def pareto_front_reference(rows: list[PlanRow], constraints: Constraints | None = None) -> list[PlanRow]:
    """The literal definition, every row against every other (O(n^2)): the oracle of pareto_front."""
    ok = [r for r in rows if r.fits and not (constraints is not None and constraints.violation(r))]
    pts = [(r, _front_point(r)) for r in ok]
    front = [r for r, p in pts if not any(_dominates(q, p) for _, q in pts)]
    return sorted(front, key=lambda r: r.step_s)


def recommend(
    rows: list[PlanRow], objective: str, constraints: Constraints, prices: PriceSummary | None = None
) -> tuple[PlanRow, list[str]]:
    """The best row for `objective` under `constraints`, and the reasons in plain words (with
    `prices`, the basis and dates the prices are on, mixed bases and unpriced devices)."""
    if objective not in OBJECTIVES:
        raise InputError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    key, sign = OBJECTIVES[objective]
    if not rows:
        raise PlanError("nothing was swept: give at least one device, precision, batch size and chip count")

    def score(r: PlanRow) -> float:
        return sign * _value(r, key)

    ranked = sorted(rows, key=lambda r: rank_key(r, objective))
    ok = [r for r in ranked if not constraints.violation(r)]
    if not ok:
        best = ranked[0]
        fits = [r for r in ranked if r.fits]
        why = constraints.violation(fits[0]) if fits else constraints.violation(best)
        lead = fits[0] if fits else best
        raise PlanError(
            f"no configuration meets your constraints: the best by {objective}, {lead.label()}, {why}. "
            "Relax a constraint or widen --devices/--precisions/--batch-sizes/--chips."
        )
    best = ok[0]
    unpriced = sorted({r.device for r in rows if r.usd_per_hour is None})
    basis = " or ".join(prices.pricing.bases) if prices is not None else "on-demand"
    if objective == "cost" and best.usd_per_million is None:
        way_out = ""
        if prices is not None:
            has = sorted({b for n in unpriced if n in prices.devices for b in prices.other_bases(n)})
            way_out = f", another --price-basis ({', '.join(has)} prices exist for them)" if has else ""
        raise PlanError(
            f"no configuration that meets your constraints has a price on the {basis} basis, so cost cannot rank them "
            f"(unpriced: {', '.join(unpriced)}); choose --objective latency, throughput or energy{way_out}, "
            "give your own prices with --prices FILE, or choose priced --devices"
        )
    same = [r for r in ok[1:] if _front_point(r) == _front_point(best)]
    folded = f" (and {len(same)} equivalent configuration{'s' if len(same) != 1 else ''})" if same else ""
    reasons = [
        f"{best.label()}{folded}: {_numbers(best)}; the best {objective} among {len(ok)} configurations that meet "
        f"your constraints ({len(rows)} swept)."
    ]
    other = next((r for r in ok if r.device != best.device and math.isfinite(score(r))), None)
    if other is not None:
        reasons.append(_compare(best, other, objective, constraints.metric))
    beaten_by = [r for r in ranked if score(r) < score(best) and constraints.violation(r)]
    if beaten_by:
        r = beaten_by[0]
        better = _ratio_words(r, best, objective)
        reasons.append(f"{r.label()} is {better} but {constraints.violation(r)}.")
    if best.how not in ("native", "autocast"):
        reasons.append(f"note: {best.device} has no {best.precision} matrix unit; it is priced on its {best.how} path.")
    if prices is not None:
        reasons += prices.lines(ranked_on_cost=objective == "cost")
    elif objective == "cost" and unpriced:
        reasons.append(f"Not ranked on cost, no {basis} price: {', '.join(unpriced)}.")
    if best.accuracy is None and get_format(best.format).storage_bits < 16:
        reasons.append(
            f"note: the accuracy of {best.format} was not measured, and formats below 16 bits can cost accuracy: "
            "measure it with --eval-data FILE (your inputs and targets) and --max-accuracy-drop, or plan a "
            "built-in model with data (digits-cnn, minilm)."
        )
    return best, reasons


WORDS = {
    "latency": "faster",
    "throughput": "more throughput",
    "cost": "cheaper per million items",
    "energy": "less energy per item",
}


def _numbers(r: PlanRow) -> str:
    """The row's figures, in readable units."""
    step = seconds_text(r.step_s)
    cost = "no price" if r.usd_per_million is None else f"${r.usd_per_million:.3g} per million items"
    return f"{step} per step, {r.throughput:.3g} items/s, {cost}, {r.energy_per_item_j * 1e3:.3g} mJ per item"


def _times(better: PlanRow, ref: PlanRow, objective: str) -> str:
    """'2.8x cheaper per million items' (how much better `better` is than `ref` on the objective)."""
    key, sign = OBJECTIVES[objective]
    vb, vr = _value(better, key), _value(ref, key)
    if vb <= 0 or vr <= 0 or not math.isfinite(vb) or not math.isfinite(vr):
        return WORDS[objective]
    return f"{(vr / vb if sign > 0 else vb / vr):.3g}x {WORDS[objective]}"  # 1.05x, not 1x


def _ratio_words(a: PlanRow, b: PlanRow, objective: str) -> str:
    return f"{_times(a, b, objective)} still"


def _compare(best: PlanRow, other: PlanRow, objective: str, metric: str) -> str:
    text = f"{_times(best, other, objective)} than the best other device, {other.label()}"
    if best.accuracy_drop is not None and other.accuracy_drop is not None:
        d = best.accuracy_drop - other.accuracy_drop
        if abs(d) > 1e-12:
            text += f", with {_acc(abs(d), metric)} {'less' if d > 0 else 'more'} accuracy"
        else:
            text += ", at the same accuracy"
    return text + "."


@dataclass
class Plan:
    model: str
    objective: str
    constraints: Constraints
    rows: list[PlanRow]
    metric: str = ""
    fp32_metric: float | None = None
    best: PlanRow | None = None
    reasons: list[str] = field(default_factory=list)
    front: list[PlanRow] = field(default_factory=list)
    training: bool = False
    best_estimate: Estimate | None = None  # the recommendation's per-op costs (one chip's step), for reports
    pricing: PriceSummary | None = None  # the basis, the quote per device, the unpriced

    def as_dict(self) -> dict[str, Any]:
        """Accuracy in the metric's one shown unit, named in the keys (report.text.metric_unit)."""
        from chipfit.report.text import metric_unit

        u = metric_unit(self.metric or self.constraints.metric)
        cons = dict(self.constraints.__dict__)
        cons[u.key("max_accuracy_drop", drop=True)] = u.shown(cons.pop("max_accuracy_drop"))
        m = self.metric
        return {
            "model": self.model,
            "objective": self.objective,
            "training": self.training,
            "constraints": cons,
            "metric": self.metric,
            (u.key("fp32_accuracy") if m else "fp32_accuracy"): u.shown(self.fp32_metric),
            "recommendation": self.best.as_dict(m) if self.best else None,
            "reasons": self.reasons,
            "pricing": self.pricing.as_dict() if self.pricing is not None else None,
            "pareto_front": [r.as_dict(m) for r in self.front],
            "rows": [r.as_dict(m) for r in self.rows],
        }

    def to_csv(self) -> str:
        buf = io.StringIO()
        if not self.rows:
            return ""
        fields = list(self.rows[0].as_dict(self.metric))
        w = csv.DictWriter(buf, fieldnames=[*fields, "pareto", "recommended"])
        w.writeheader()
        front = {id(r) for r in self.front}
        for r in self.rows:
            w.writerow({**r.as_dict(self.metric), "pareto": id(r) in front, "recommended": r is self.best})
        return buf.getvalue()
