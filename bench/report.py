"""Collects figures and ratios, prints the table, writes the JSON file."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.stats import Summary, summarize


@dataclass(frozen=True)
class Figure:
    """One measured quantity: every sample, in ``unit``."""

    key: str
    label: str
    unit: str
    samples: tuple[float, ...]

    @property
    def summary(self) -> Summary:
        """Median, p99 and range."""
        return summarize(self.samples)


@dataclass(frozen=True)
class Ratio:
    """Product figure over baseline figure (medians, or p99s with ``use_p99``)."""

    key: str
    label: str
    product: str
    baseline: str
    higher_is_better: bool
    target: float | None
    use_p99: bool = False


@dataclass
class Report:
    """Everything one run measured."""

    machine: dict[str, object]
    sizes: dict[str, object]
    figures: dict[str, Figure] = field(default_factory=dict)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, label: str, unit: str, samples: Sequence[float]) -> Figure:
        """Record a figure (replacing one of the same key)."""
        figure = Figure(key, label, unit, tuple(float(s) for s in samples))
        self.figures[key] = figure
        return figure

    def compare(
        self,
        key: str,
        label: str,
        product: str,
        baseline: str,
        *,
        higher_is_better: bool = False,
        target: float | None = None,
        use_p99: bool = False,
    ) -> None:
        """Record the ratio of two figures already added."""
        self.ratios.append(Ratio(key, label, product, baseline, higher_is_better, target, use_p99))

    def value(self, ratio: Ratio) -> float:
        """The ratio's value: product / baseline."""
        product = self.figures[ratio.product].summary
        baseline = self.figures[ratio.baseline].summary
        if ratio.use_p99:
            return product.p99 / baseline.p99 if baseline.p99 else math.nan
        return product.median / baseline.median if baseline.median else math.nan

    def badness(self, ratio: Ratio) -> float:
        """How far from its target a ratio is (>1: missed), or from parity without one."""
        value = self.value(ratio)
        limit = ratio.target or 1.0
        return limit / value if ratio.higher_is_better else value / limit

    def worst(self) -> Ratio | None:
        """The ratio furthest from its target (among those that have one)."""
        measured = [r for r in self.ratios if not math.isnan(self.value(r))]
        candidates = [r for r in measured if r.target is not None] or measured
        return max(candidates, key=self.badness, default=None)

    def table(self) -> str:
        """The human-readable table: figures, then ratios."""
        lines = ["", "figures (median, p99, min..max over n samples)", ""]
        lines.append(f"{'':<58} {'median':>10} {'p99':>10} {'min..max':>21} {'n':>4}")
        for figure in self.figures.values():
            s = figure.summary
            spread = f"{_fmt(s.low)}..{_fmt(s.high)}"
            label = f"{figure.label} [{figure.unit}]"
            lines.append(
                f"{label:<58} {_fmt(s.median):>10} {_fmt(s.p99):>10} {spread:>21} {s.n:>4}"
            )
        lines += ["", "ratios (product / same-run baseline)", ""]
        lines.append(f"{'':<58} {'ratio':>10} {'target':>10} {'':>6}")
        for ratio in self.ratios:
            value = self.value(ratio)
            target = ""
            verdict = ""
            if ratio.target is not None:
                target = f"{'>=' if ratio.higher_is_better else '<='} {ratio.target:g}"
                verdict = "ok" if self.badness(ratio) <= 1 else "MISSED"
            lines.append(f"{ratio.label:<58} {value:>10.3f} {target:>10} {verdict:>6}")
        worst = self.worst()
        if worst is not None:
            lines += ["", f"worst ratio: {worst.label} = {self.value(worst):.3f}"]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def as_json(self) -> dict[str, object]:
        """Every figure with all its samples, and every ratio."""
        worst = self.worst()
        return {
            "machine": self.machine,
            "sizes": self.sizes,
            "figures": {
                key: {
                    "label": f.label,
                    "unit": f.unit,
                    **f.summary.as_dict(),
                    "samples": list(f.samples),
                }
                for key, f in self.figures.items()
            },
            "ratios": {
                r.key: {
                    "label": r.label,
                    "product": r.product,
                    "baseline": r.baseline,
                    "value": _finite(self.value(r)),
                    "statistic": "p99" if r.use_p99 else "median",
                    "higher_is_better": r.higher_is_better,
                    "target": r.target,
                }
                for r in self.ratios
            },
            "worst_ratio": worst.key if worst else None,
            "notes": self.notes,
        }

    def write_json(self, path: Path) -> None:
        """Write ``as_json`` to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value
