"""How well the event detectors find the labelled events of the simulator's scenarios.

Each scenario's CAN frames go through the edge's :class:`~edge.decoder.FrameDecoder`
into an :class:`~edge.events.engine.EventEngine`. A detected event matches a label of
the same type when their times overlap (the label widened by :data:`MATCH_TOLERANCE_S`
on both sides); each label matches at most one event, so a split event counts one
false positive. Detection latency is the time from the label's start (when the event's
definition was first met) to the sample at which the engine reported the event.

Goals: precision and recall at least :data:`GOAL` for every event type, and no event at
all on the uneventful drives.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge.decoder import FrameDecoder
from edge.events.config import EventsConfig
from edge.events.engine import EventEngine
from roadwave.contract import Record
from roadwave.contract.events import ENDED, Event
from roadwave.sim.fleet import DEFAULT_DBC
from roadwave.sim.scenarios import START_TIME, Label, Scenario, build_scenarios, scenario_frames

MATCH_TOLERANCE_S = 2.0
GOAL = 0.95
UNEVENTFUL = "uneventful"


@dataclass(frozen=True, slots=True)
class Detection:
    """An event the engine reported, in seconds since the scenario's start."""

    kind: str
    start_s: float
    detected_s: float
    end_s: float
    severity: int


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """One scenario run: its labels, what was detected, and how they matched."""

    name: str
    group: str
    run: int
    duration_s: float
    labels: tuple[Label, ...]
    detections: tuple[Detection, ...]
    matches: tuple[tuple[Label, Detection], ...]
    false_positives: tuple[Detection, ...]
    missed: tuple[Label, ...]


def detect(scenario: Scenario, config: EventsConfig) -> list[Detection]:
    """Decode the scenario's frames and run the event engine on the records; the ended events."""
    decoder = FrameDecoder.from_files("can0", [DEFAULT_DBC], None)
    engine = EventEngine(config)
    ended: list[Event] = []

    def feed(record: Record) -> None:
        ended.extend(event for event in engine.feed(record) if event.state == ENDED)

    for frame in scenario_frames(scenario):
        decoder.decode(frame, feed)
    ended.extend(engine.finish())
    origin_ns = round(START_TIME * 1e9)

    def seconds(t_ns: int | None) -> float:
        assert t_ns is not None  # ended events have an end
        return (t_ns - origin_ns) / 1e9

    return [
        Detection(e.kind, seconds(e.start_ns), seconds(e.detected_ns), seconds(e.end_ns), e.severity)
        for e in ended
    ]


def match(
    labels: Sequence[Label], detections: Sequence[Detection], tolerance_s: float = MATCH_TOLERANCE_S
) -> tuple[list[tuple[Label, Detection]], list[Detection], list[Label]]:
    """Pair detections with labels of their type whose times overlap; (matches, false positives, missed)."""
    free = sorted(labels, key=lambda label: label.start_s)
    matches, false_positives = [], []
    for detection in sorted(detections, key=lambda d: d.detected_s):
        label = next(
            (
                label
                for label in free
                if label.kind == detection.kind
                and detection.start_s <= label.end_s + tolerance_s
                and detection.end_s >= label.start_s - tolerance_s
            ),
            None,
        )
        if label is None:
            false_positives.append(detection)
        else:
            free.remove(label)
            matches.append((label, detection))
    return matches, false_positives, free


def run_scenario(scenario: Scenario, config: EventsConfig, run: int = 0) -> ScenarioResult:
    """Detect the events of one scenario and match them with its labels."""
    detections = detect(scenario, config)
    matches, false_positives, missed = match(scenario.labels, detections)
    return ScenarioResult(
        scenario.name,
        scenario.group,
        run,
        scenario.duration_s,
        scenario.labels,
        tuple(detections),
        tuple(matches),
        tuple(false_positives),
        tuple(missed),
    )


@dataclass(frozen=True, slots=True)
class TypeScore:
    """The results of one event type over all scenario runs."""

    kind: str
    labels: int
    detections: int
    true_positives: int
    false_positives: int
    missed: int
    latencies_s: tuple[float, ...]

    @property
    def precision(self) -> float | None:
        """Share of the detections that match a label; None without detections."""
        return self.true_positives / self.detections if self.detections else None

    @property
    def recall(self) -> float | None:
        """Share of the labels that were detected; None without labels."""
        return self.true_positives / self.labels if self.labels else None

    @property
    def latency_p50_s(self) -> float | None:
        return statistics.median(self.latencies_s) if self.latencies_s else None

    @property
    def latency_max_s(self) -> float | None:
        return max(self.latencies_s) if self.latencies_s else None


@dataclass(frozen=True, slots=True)
class Report:
    """The evaluation of every scenario run; see the module docstring for the goals."""

    kinds: tuple[str, ...]
    results: tuple[ScenarioResult, ...]

    def score(self, kind: str) -> TypeScore:
        """The results of event type ``kind``."""
        results = self.results
        matches = [
            detection.detected_s - label.start_s
            for r in results
            for label, detection in r.matches
            if label.kind == kind
        ]
        return TypeScore(
            kind,
            labels=sum(1 for r in results for label in r.labels if label.kind == kind),
            detections=sum(1 for r in results for d in r.detections if d.kind == kind),
            true_positives=len(matches),
            false_positives=sum(1 for r in results for d in r.false_positives if d.kind == kind),
            missed=sum(1 for r in results for label in r.missed if label.kind == kind),
            latencies_s=tuple(matches),
        )

    @property
    def uneventful_s(self) -> float:
        """Simulated seconds of uneventful drives."""
        return sum(r.duration_s for r in self.results if r.group == UNEVENTFUL)

    @property
    def uneventful_events(self) -> int:
        """Events detected on the uneventful drives (the goal is none)."""
        return sum(len(r.detections) for r in self.results if r.group == UNEVENTFUL)

    def shortfalls(self) -> list[str]:
        """Every goal missed, in words; empty when all are met."""
        problems = []
        for kind in self.kinds:
            score = self.score(kind)
            for name, value in (("precision", score.precision), ("recall", score.recall)):
                if value is not None and value < GOAL:
                    problems.append(f"{kind}: {name} {value:.3f} < {GOAL}")
        if self.uneventful_events:
            problems.append(f"{self.uneventful_events} event(s) on the uneventful drives")
        return problems

    def table(self) -> str:
        """The per-type results as a text table, with a summary."""
        header = (
            f"{'event type':<20}{'labels':>7}{'found':>7}{'missed':>7}{'false':>7}"
            f"{'precision':>11}{'recall':>8}{'latency p50':>13}{'latency max':>13}"
        )
        lines = [header, "-" * len(header)]
        for kind in self.kinds:
            s = self.score(kind)
            lines.append(
                f"{kind:<20}{s.labels:>7}{s.true_positives:>7}{s.missed:>7}{s.false_positives:>7}"
                f"{_ratio(s.precision):>11}{_ratio(s.recall):>8}"
                f"{_seconds(s.latency_p50_s):>13}{_seconds(s.latency_max_s):>13}"
            )
        runs = len({r.run for r in self.results})
        simulated = sum(r.duration_s for r in self.results)
        lines.append("")
        lines.append(
            f"{len(self.results)} scenario runs ({runs} run(s) of {len(self.results) // max(runs, 1)}), "
            f"{simulated:.0f} s simulated; uneventful drives: {self.uneventful_s:.0f} s, "
            f"{self.uneventful_events} event(s)"
        )
        problems = self.shortfalls()
        verdict = "met" if not problems else "MISSED: " + "; ".join(problems)
        lines.append(
            f"goals (precision and recall >= {GOAL} per type, no event on uneventful drives): {verdict}"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "goal": {
                "min_precision": GOAL,
                "min_recall": GOAL,
                "met": not self.shortfalls(),
                "shortfalls": self.shortfalls(),
            },
            "types": {
                kind: {
                    "labels": s.labels,
                    "detections": s.detections,
                    "true_positives": s.true_positives,
                    "false_positives": s.false_positives,
                    "missed": s.missed,
                    "precision": s.precision,
                    "recall": s.recall,
                    "latency_p50_s": s.latency_p50_s,
                    "latency_max_s": s.latency_max_s,
                }
                for kind in self.kinds
                for s in (self.score(kind),)
            },
            "uneventful": {"seconds": self.uneventful_s, "events": self.uneventful_events},
            "scenarios": [
                {
                    "name": r.name,
                    "group": r.group,
                    "run": r.run,
                    "duration_s": r.duration_s,
                    "labels": len(r.labels),
                    "detections": [
                        {
                            "type": d.kind,
                            "start_s": d.start_s,
                            "detected_s": d.detected_s,
                            "end_s": d.end_s,
                            "severity": d.severity,
                        }
                        for d in r.detections
                    ],
                    "false_positives": len(r.false_positives),
                    "missed": [{"type": label.kind, "start_s": label.start_s} for label in r.missed],
                }
                for r in self.results
            ],
        }


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def evaluate(
    config: EventsConfig, seed: int = 0, runs: int = 1, names: Sequence[str] | None = None
) -> Report:
    """Run the scenarios (all, or those named) ``runs`` times; each run draws new details.

    Raises:
        ValueError: ``runs`` below 1 or an unknown scenario name.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    results = [
        run_scenario(scenario, config, run)
        for run in range(runs)
        for scenario in build_scenarios(config, seed, run, names)
    ]
    kinds = tuple(settings.kind for settings in config.detectors)
    return Report(kinds, tuple(results))
