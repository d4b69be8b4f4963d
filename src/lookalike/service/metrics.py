"""Prometheus metrics in its text format, written by hand (a few counters and histograms do
not justify a client library)."""

from __future__ import annotations

import threading
from collections import Counter


class Metrics:
    """Request counters and latency histograms in Prometheus' text format, written by hand."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self._latency: dict[str, list[float]] = {}
        self.in_flight = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            row = self._latency.setdefault(route, [0.0] * (len(self.BUCKETS) + 2))
            for i, bound in enumerate(self.BUCKETS):
                if seconds <= bound:
                    row[i] += 1
            row[-2] += seconds
            row[-1] += 1

    def render(self, gauges: list[tuple[str, str, dict[str, str], float]]) -> str:
        lines = [
            "# HELP lookalike_http_requests_total HTTP requests by route and status.",
            "# TYPE lookalike_http_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), count in sorted(self.requests.items()):
                labels = _labels({"method": method, "route": route, "status": str(status)})
                lines.append(f"lookalike_http_requests_total{labels} {count}")
            lines += [
                "# HELP lookalike_http_request_duration_seconds HTTP request latency by route.",
                "# TYPE lookalike_http_request_duration_seconds histogram",
            ]
            for route, row in sorted(self._latency.items()):
                name = "lookalike_http_request_duration_seconds"
                for bound, below in zip(self.BUCKETS, row, strict=False):
                    labels = _labels({"route": route, "le": f"{bound:g}"})
                    lines.append(f"{name}_bucket{labels} {below:g}")
                lines.append(f"{name}_bucket{_labels({'route': route, 'le': '+Inf'})} {row[-1]:g}")
                lines.append(f"{name}_sum{_labels({'route': route})} {row[-2]:.6f}")
                lines.append(f"{name}_count{_labels({'route': route})} {row[-1]:g}")
            in_flight = float(self.in_flight)
        gauges = [
            ("lookalike_http_requests_in_flight", "HTTP requests being served.", {}, in_flight),
            *gauges,
        ]
        seen: set[str] = set()
        for name, help_text, labels_of, value in gauges:
            if name not in seen:
                seen.add(name)
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines.append(f"{name}{_labels(labels_of)} {value:g}")
        return "\n".join(lines) + "\n"


def _labels(values: dict[str, str]) -> str:
    if not values:
        return ""
    escaped = (
        f'{key}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for key, value in values.items()
    )
    return "{" + ",".join(escaped) + "}"
