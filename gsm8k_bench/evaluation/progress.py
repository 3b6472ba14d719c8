"""Live progress of the evaluation, from the server's /metrics while lm-eval runs.

Questions answered out of the total, requests in flight, output tokens/s and an ETA, all from the
server's own counters (server_metrics.NAMES): they mean the same for vLLM and SGLang and need nothing
from lm-eval, whose progress bar goes to its log.  On a terminal one line is rewritten in place;
anywhere else (a CI log, a file) a plain line every --progress-interval seconds, with no carriage
return or escape sequence.

A stall ends the evaluation: no request finished and no token generated for --stall-timeout seconds
while requests are in flight (or while the server no longer answers /metrics).  The line says so,
and `poll` returns the reason for the session to fail with.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gsm8k_bench.evaluation import server_metrics

GSM8K_TEST_QUESTIONS = 1319  # the hub's openai/gsm8k test split
SCRAPE_EVERY_S = 2.0
SCRAPE_TIMEOUT_S = 3.0  # a hung server must not hold the session's watch loop for long
RATE_WINDOW_S = 10.0  # tokens/s over the last seconds, so a slowdown shows
IDLE_NOTE_S = 10.0  # the line mentions idle time from here on


def question_count(limit: int | None, dataset_dir: Path | None) -> int:
    """How many questions lm-eval will ask: the first `limit` of the test split."""
    if dataset_dir is not None:
        with (dataset_dir / "test.jsonl").open("rb") as handle:
            available = sum(1 for line in handle if line.strip())
    else:
        available = GSM8K_TEST_QUESTIONS
    return min(limit, available) if limit else available


@dataclass(frozen=True)
class Snapshot:
    """Progress at one moment of the evaluation."""

    elapsed_s: float
    answered: int
    total: int
    in_flight: int  # running + waiting at the last answer from /metrics
    answering: bool  # whether the last /metrics request was answered
    tokens_per_s: float | None
    idle_s: float  # since a request last finished or a token was last generated


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def format_line(snap: Snapshot, stall_timeout_s: float) -> str:
    parts = [f"eval {snap.answered}/{snap.total} answered",
             f"{snap.in_flight} in flight" if snap.answering else
             f"{snap.in_flight} in flight when /metrics last answered",
             "– output tok/s" if snap.tokens_per_s is None else f"{snap.tokens_per_s:.1f} output tok/s",
             f"{_duration(snap.elapsed_s)} elapsed"]
    if 0 < snap.answered < snap.total:
        remaining = (snap.total - snap.answered) * snap.elapsed_s / snap.answered
        parts.append(f"ETA {_duration(remaining)}")
    if snap.idle_s >= stall_timeout_s:
        parts.append(f"STALLED: no progress for {_duration(snap.idle_s)}")
    elif snap.idle_s >= IDLE_NOTE_S:
        parts.append(f"no progress for {_duration(snap.idle_s)} (stall limit {_duration(stall_timeout_s)})")
    return " | ".join(parts)


def stall_reason(snap: Snapshot) -> str:
    reason = f"no progress for {snap.idle_s:.0f} s with {snap.in_flight} requests in flight: the server looks hung"
    return reason if snap.answering else f"{reason} (it no longer answers /metrics)"


class Monitor:
    """Use as a context manager; call `poll()` often (it scrapes every SCRAPE_EVERY_S), `done()` when lm-eval
    finished."""

    def __init__(self, framework: str, base_url: str, total: int, *, interval_s: float, stall_timeout_s: float,
                 baseline: server_metrics.Samples | None, log: Callable[[str], None],
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if framework not in server_metrics.NAMES:
            raise ValueError(f"no progress metrics known for {framework!r}")
        self.framework, self.base_url, self.total = framework, base_url, total
        self.interval_s, self.stall_timeout_s = interval_s, stall_timeout_s
        self.log, self.clock = log, clock
        self.stream = stream or sys.stderr
        self.in_place = self.stream.isatty()
        self.start = self.last_scrape = self.last_print = self.last_progress = clock()
        self.base = server_metrics.counts(framework, baseline) if baseline is not None else None
        self.answered, self.tokens, self.in_flight, self.answering = 0, 0.0, 0, True
        self.history: deque[tuple[float, float]] = deque([(self.start, 0.0)])
        self.line_open = False

    def _read(self, now: float, samples: server_metrics.Samples | None) -> None:
        self.answering = samples is not None
        if samples is None:
            return
        counts = server_metrics.counts(self.framework, samples)
        if self.base is None:  # /metrics did not answer before the evaluation: count from now on
            self.base = counts
        answered = int(counts.finished - self.base.finished)
        tokens = counts.step_tokens - self.base.step_tokens
        self.in_flight = int(counts.running + counts.waiting)
        # Idle time counts only while the server owes answers.
        if answered > self.answered or tokens > self.tokens or self.in_flight == 0:
            self.last_progress = now
        self.answered, self.tokens = answered, tokens
        self.history.append((now, tokens))
        while len(self.history) > 2 and now - self.history[1][0] >= RATE_WINDOW_S:
            self.history.popleft()

    def snapshot(self, now: float) -> Snapshot:
        then, tokens_then = self.history[0]
        rate = (self.tokens - tokens_then) / (now - then) if now > then and self.answering else None
        # A request lm-eval retried after a timeout may finish twice on the server: never more than asked.
        return Snapshot(now - self.start, min(self.answered, self.total), self.total, self.in_flight,
                        self.answering, rate, now - self.last_progress)

    def _show(self, line: str) -> None:
        if self.in_place:
            width = shutil.get_terminal_size((120, 24)).columns - 1
            self.stream.write("\r" + line[:width] + "\x1b[K")
            self.stream.flush()
            self.line_open = True
        else:
            self.log(line)

    def poll(self) -> str | None:
        """Scrape when due and show the line; the reason to stop when the evaluation has stalled."""
        now = self.clock()
        if now - self.last_scrape < min(SCRAPE_EVERY_S, self.interval_s):
            return None
        self.last_scrape = now
        self._read(now, server_metrics.scrape(self.base_url, SCRAPE_TIMEOUT_S))
        now = self.clock()
        snap = self.snapshot(now)
        stalled = snap.idle_s >= self.stall_timeout_s
        if self.in_place or stalled or now - self.last_print >= self.interval_s:
            self.last_print = now
            self._show(format_line(snap, self.stall_timeout_s))
        return stall_reason(snap) if stalled else None

    def done(self, samples: server_metrics.Samples | None) -> None:
        """The last line, with the final counts (from `samples`, the counters just read) and tokens/s over
        the whole evaluation."""
        self._read(self.clock(), samples)
        self.history = deque([(self.start, 0.0)])
        self._show(format_line(self.snapshot(self.clock()), self.stall_timeout_s) + " | done")

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.line_open:  # what is printed next starts on a line of its own
            self.stream.write("\n")
            self.stream.flush()
            self.line_open = False
