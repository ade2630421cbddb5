"""dragbench.progress: log lines that survive a pipe (rate limited, heartbeat every 30 s), on a fake clock."""

from __future__ import annotations

import logging

import pytest

from dragbench import progress
from dragbench.progress import HEARTBEAT_S, MIN_INTERVAL_S, format_seconds, heartbeat, stage, track


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(caplog: pytest.LogCaptureFixture):
    fake = FakeClock()
    progress.set_mode("log", clock=fake, heartbeat_thread=False)
    progress._STATE.last_line = -float("inf")
    caplog.set_level(logging.INFO, logger="dragbench.progress")
    yield fake
    progress.set_mode("auto", clock=__import__("time").monotonic)
    assert progress._STATE.frames == []


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dragbench.progress"]


def test_format_seconds():
    assert format_seconds(0) == "0:00:00"
    assert format_seconds(75.4) == "0:01:15"
    assert format_seconds(3 * 3600 + 2 * 60 + 5) == "3:02:05"


def test_fast_loop_logs_at_most_every_min_interval_with_rate_and_eta(clock, caplog):
    times = []
    for _ in track(range(100), "LoRA step", unit="step"):
        clock.now += 1.0  # 1 s per step
        if lines(caplog) and (not times or times[-1][1] != lines(caplog)[-1]):
            times.append((clock.now, lines(caplog)[-1]))
    out = lines(caplog)
    assert out[0] == "LoRA step 1/100"  # the first item: no rate yet
    assert out[1] == "LoRA step 11/100, 1 step/s, ETA 0:01:30"  # 10 done in 10 s, 90 left
    assert out[-1] == "LoRA step 100/100, 1 step/s: done in 0:01:40"
    assert len(out) == 1 + 100 // int(MIN_INTERVAL_S)


def test_slow_items_are_reported_in_seconds_per_item(clock, caplog):
    for _ in track(["a", "b", "c"], "sample", unit="sample", label=str, min_interval=0):
        clock.now += 40.0
    assert lines(caplog)[:3] == [
        "sample 1/3 a",
        "sample 2/3 b, 40 s/sample, ETA 0:01:20",
        "sample 3/3 c, 40 s/sample, ETA 0:00:40",
    ]


def test_heartbeat_logs_the_whole_chain_when_nothing_came_for_30_s(clock, caplog):
    with stage("job", "ablation=lora_steps_40", position=2, total=14):
        for _ in track(["toy/scene_0000", "toy/scene_0001"], "sample", label=str, initial=1, min_interval=0):
            assert heartbeat() is False  # the sample line just came
            clock.now += HEARTBEAT_S - 2
            assert heartbeat() is False
            clock.now += 1  # due one poll (1 s) early, so that gaps stay <= 30 s between polls
            assert heartbeat() is True
            assert heartbeat() is False  # the heartbeat itself counts as a line
            for _ in track(range(50), "LoRA step", unit="step"):
                clock.now += 0.5
    out = lines(caplog)
    assert out[0] == "job 3/14 ablation=lora_steps_40: started"
    assert out[1] == "job 3/14 ablation=lora_steps_40 | sample 2/3 toy/scene_0000"
    assert out[2] == (
        "job 3/14 ablation=lora_steps_40 | sample 2/3 toy/scene_0000 (still running: 0:00:29 in sample)"
    )
    assert out[-1] == "job 3/14 ablation=lora_steps_40: finished in 0:01:48"  # 2 x (29 + 25) s
    assert heartbeat() is False  # nothing active: no line
    assert any(
        line.startswith("job 3/14 ablation=lora_steps_40 | sample 2/3 toy/scene_0000 | LoRA step")
        for line in out
    )


def test_gaps_never_exceed_the_heartbeat_when_it_runs_every_second(clock):
    """Items of 45 s each, the heartbeat polled every (fake) second: lines at most 30 s apart."""
    stamps: list[float] = []

    class Stamp(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stamps.append(clock.now)

    handler = Stamp()
    logging.getLogger("dragbench.progress").addHandler(handler)
    try:
        for _ in track(range(4), "drag iteration"):
            for _ in range(45):
                clock.now += 1.0
                heartbeat()
    finally:
        logging.getLogger("dragbench.progress").removeHandler(handler)
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert stamps[0] == 1000.0 and len(stamps) >= 180 // HEARTBEAT_S
    assert max(gaps) <= HEARTBEAT_S


def test_stage_eta_over_jobs_from_the_sweep_start(clock, caplog):
    import time

    with stage("job", "unet_block=2", position=4, total=14, since=time.time() - 400):
        pass
    assert lines(caplog)[0].startswith("job 5/14 unet_block=2, 100 s/job, ETA 0:16:40: started")


def test_off_mode_and_unknown_mode(clock, caplog):
    assert list(track(range(3), "x", mode="off")) == [0, 1, 2]
    assert lines(caplog) == []
    with pytest.raises(ValueError, match="auto, bar, log, off"):
        progress.set_mode("loud")


def test_break_out_of_a_loop_leaves_no_frame(clock):
    for i in track(range(10), "drag iteration"):
        if i == 3:
            break
    assert progress._STATE.frames == []


class Terminal:
    def isatty(self) -> bool:
        return True


def test_auto_mode_is_a_bar_only_when_stdout_and_stderr_are_terminals(monkeypatch):
    import io

    progress.set_mode("auto")
    monkeypatch.setattr("sys.stdout", Terminal())
    monkeypatch.setattr("sys.stderr", Terminal())
    assert progress.get_mode() == "bar"
    monkeypatch.setattr("sys.stdout", io.StringIO())  # `... | tee log`: the log lines go to the file
    assert progress.get_mode() == "log"
