"""Progress on long work that survives a pipe: a tqdm bar on a terminal, periodic log lines otherwise.

`track(iterable, desc=...)` wraps a loop (samples, LoRA steps, drag iterations); `stage(label)` marks a
span without items (a sweep job). Nested trackers form a chain, so one log line says where the work is:

    job 3/14 ablation=lora_steps_40 | sample 2/4 toy/scene_0001 | LoRA step 41/80, 3.1 step/s, ETA 0:00:13

In log mode a tracker logs when one of its items starts and no progress line was logged for `min_interval`
seconds (MIN_INTERVAL_S; 0 = every item), and a heartbeat thread logs the current chain whenever no line
was logged for HEARTBEAT_S seconds, so a piped log shows a line at least every HEARTBEAT_S while work runs.
The mode is chosen once per process (`set_mode`): "auto" (a bar when stdout and stderr are terminals, else
log lines), "bar", "log" (sweep jobs: no bars nested inside them) or "off".
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
MODES = ("auto", "bar", "log", "off")
MIN_INTERVAL_S = 10.0  # log mode: at most one line per this many seconds from inner loops
HEARTBEAT_S = 30.0  # log mode: a line at least this often while any tracker is active
_HEARTBEAT_POLL_S = 1.0  # how often the heartbeat thread looks at the clock
HEARTBEAT_DUE_S = HEARTBEAT_S - _HEARTBEAT_POLL_S  # this early, so gaps stay <= HEARTBEAT_S between polls
Clock = Callable[[], float]


@dataclass
class _Frame:
    """One active tracker: `done` of `total` items finished, `current` = label of the item in progress."""

    desc: str
    total: int | None
    done: int
    unit: str
    started_at: float
    initial: int = 0
    current: str = ""
    rate_hint: tuple[int, float] | None = None  # (items done, since) for a stage: progress made elsewhere
    counted: bool = True  # show "k/total" (False: a stage without a position)
    finished: bool = False  # the end line: "k/total" = items done, no ETA

    def position(self) -> str:
        """`desc k/total current`: the item in progress (1-based)."""
        total = f"/{self.total}" if self.total is not None else ""
        count = f" {self.done + (0 if self.finished else 1)}{total}" if self.counted else ""
        return f"{self.desc}{count}{' ' + self.current if self.current else ''}"

    def speed(self, now: float) -> str:
        """`, 3.1 step/s, ETA 0:00:13` from the items finished in this process (empty before the first)."""
        done, since = self.rate_hint or (self.done - self.initial, self.started_at)
        elapsed = now - since
        if done <= 0 or elapsed <= 0:
            return ""
        rate = done / elapsed
        text = f", {rate:.3g} {self.unit}/s" if rate >= 1 else f", {elapsed / done:.3g} s/{self.unit}"
        if self.total is not None and not self.finished:
            text += f", ETA {format_seconds((self.total - self.done) / rate)}"
        return text


def format_seconds(seconds: float) -> str:
    """H:MM:SS (rounded to the second)."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _State:
    """The process-wide mode, the chain of active trackers and when the last line was logged."""

    def __init__(self) -> None:
        self.mode = "auto"
        self.clock: Clock = time.monotonic
        self.frames: list[_Frame] = []
        self.last_line = -float("inf")
        self.lock = threading.RLock()
        self.heartbeat: threading.Thread | None = None
        self.use_thread = True
        self.wake = threading.Event()

    def line(self, now: float, suffix: str = "") -> str:
        chain = " | ".join(f.position() for f in self.frames)
        return chain + (self.frames[-1].speed(now) if self.frames else "") + suffix

    def emit(self, now: float, suffix: str = "") -> None:
        self.last_line = now
        log.info("%s", self.line(now, suffix))


_STATE = _State()


def set_mode(mode: str, clock: Clock | None = None, heartbeat_thread: bool = True) -> None:
    """Choose how progress is shown in this process.

    Args:
        mode: "auto" (a bar when stdout and stderr are terminals, else log lines), "bar", "log" or "off".
        clock: seconds, monotonic (tests pass a fake clock); None keeps the current one.
        heartbeat_thread: log mode: run the heartbeat thread (tests call `heartbeat` themselves).

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}, got {mode!r}")
    _STATE.mode = mode
    _STATE.use_thread = heartbeat_thread
    if clock is not None:
        _STATE.clock = clock


def get_mode() -> str:
    """The effective mode: "bar", "log" or "off" ("auto" resolved against stdout and stderr)."""
    if _STATE.mode != "auto":
        return _STATE.mode
    streams = (sys.stdout, sys.stderr)  # logs go to stdout (Hydra), bars to stderr: both must be a terminal
    return "bar" if all(getattr(s, "isatty", lambda: False)() for s in streams) else "log"


def heartbeat(now: float | None = None) -> bool:
    """Log the current chain if trackers are active and no line came for HEARTBEAT_DUE_S; True if it logged.

    Called every second by the heartbeat thread (log mode); tests call it with a fake time.
    """
    with _STATE.lock:
        now = _STATE.clock() if now is None else now
        if not _STATE.frames or now - _STATE.last_line < HEARTBEAT_DUE_S:
            return False
        innermost = _STATE.frames[-1]
        _STATE.emit(
            now, f" (still running: {format_seconds(now - innermost.started_at)} in {innermost.desc})"
        )
        return True


def _heartbeat_loop() -> None:
    while not _STATE.wake.wait(_HEARTBEAT_POLL_S):
        with _STATE.lock:
            if not _STATE.frames:
                _STATE.heartbeat = None
                return
        heartbeat()


def _push(frame: _Frame, start_thread: bool) -> None:
    with _STATE.lock:
        _STATE.frames.append(frame)
        if start_thread and _STATE.use_thread and _STATE.heartbeat is None:
            _STATE.wake.clear()
            _STATE.heartbeat = threading.Thread(
                target=_heartbeat_loop, name="progress-heartbeat", daemon=True
            )
            _STATE.heartbeat.start()


def _pop(frame: _Frame) -> None:
    with _STATE.lock:
        if frame in _STATE.frames:
            _STATE.frames.remove(frame)


def track(
    iterable: Iterable[T],
    desc: str,
    *,
    total: int | None = None,
    unit: str = "it",
    label: Callable[[T], str] | None = None,
    initial: int = 0,
    min_interval: float = MIN_INTERVAL_S,
    mode: str | None = None,
) -> Iterator[T]:
    """Yield the items of `iterable`, showing progress (see the module docstring).

    Args:
        iterable: the work items.
        desc: what one item is, e.g. "sample", "LoRA step", "drag iteration".
        total: number of items (default: len(iterable) when it has one, plus `initial`).
        unit: the rate's unit ("step" -> "3.1 step/s").
        label: names the item in progress in log lines (e.g. the sample id).
        initial: items already finished before this run (a resumed job): counted, not timed.
        min_interval: log mode: log at an item's start only if no line came for this long (0 = always).
        mode: override the process mode for this tracker ("bar", "log", "off").

    Yields:
        The items, unchanged.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable) + initial  # type: ignore[arg-type]
    chosen = get_mode() if mode is None else mode
    if chosen not in MODES[1:]:
        raise ValueError(f"progress mode must be one of bar, log, off, got {chosen!r}")
    if chosen == "off":
        yield from iterable
        return
    frame = _Frame(desc, total, initial, unit, _STATE.clock(), initial=initial)
    _push(frame, start_thread=chosen == "log")
    try:
        if chosen == "bar":
            yield from _bar(iterable, frame)
        else:
            yield from _log_lines(iterable, frame, label, min_interval)
    finally:
        _pop(frame)


def _bar(iterable: Iterable[T], frame: _Frame) -> Iterator[T]:
    from tqdm.auto import tqdm

    depth = len(_STATE.frames) - 1
    bar = tqdm(
        iterable, desc=frame.desc, total=frame.total, initial=frame.initial, unit=frame.unit, leave=depth == 0
    )
    with bar:
        for item in bar:
            yield item
            frame.done += 1


def _log_lines(
    iterable: Iterable[T], frame: _Frame, label: Callable[[T], str] | None, min_interval: float
) -> Iterator[T]:
    for item in iterable:
        with _STATE.lock:
            frame.current = label(item) if label is not None else ""
            now = _STATE.clock()
            if now - _STATE.last_line >= min_interval:
                _STATE.emit(now)
        yield item
        frame.done += 1
    with _STATE.lock:
        now = _STATE.clock()
        if now - frame.started_at >= MIN_INTERVAL_S and frame.done > frame.initial:
            frame.current, frame.finished = "", True
            _STATE.emit(now, f": done in {format_seconds(now - frame.started_at)}")


@contextlib.contextmanager
def stage(
    desc: str,
    label: str = "",
    *,
    position: int | None = None,
    total: int | None = None,
    since: float | None = None,
) -> Iterator[None]:
    """Mark a span of work without items (e.g. one job of a sweep) in the chain of log lines.

    Args:
        desc: what it is, e.g. "job" (shown as "job 3/14 <label>" when position/total are given).
        label: which one, e.g. the job's overrides "ablation=lora_steps_40".
        position: 0-based index of this span among `total` (e.g. Hydra's job number).
        total: how many such spans there are (e.g. the sweep's job count), or None.
        since: wall-clock time (time.time()) when span 0 started, for the rate and ETA over spans.

    Yields:
        Nothing; logs a start line and (log mode) an end line with the time taken.
    """
    chosen = get_mode()
    if chosen == "off":
        yield
        return
    now = _STATE.clock()
    done = position or 0
    frame = _Frame(
        desc, total if position is not None else None, done, desc, now, initial=done, current=label
    )
    frame.counted = position is not None
    if since is not None and position is not None and position > 0:
        frame.rate_hint = (position, now - (time.time() - since))
    _push(frame, start_thread=chosen == "log")
    try:
        with _STATE.lock:
            _STATE.emit(now, ": started")
        yield
    finally:
        with _STATE.lock:
            now = _STATE.clock()
            frame.rate_hint = None
            _STATE.emit(now, f": finished in {format_seconds(now - frame.started_at)}")
        _pop(frame)
