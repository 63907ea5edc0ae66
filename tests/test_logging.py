"""Progress display: informative, and no flood of lines when output is not a terminal."""

from __future__ import annotations

import io

from algorithms.common import ConsoleLogger, RecordingLogger


def test_console_logger_does_not_flood_a_log_file():
    stream = io.StringIO()  # not a terminal
    logger = ConsoleLogger(total_steps=100_000, stream=stream, log_interval_s=3600)
    for step in range(1, 10_001):
        logger.log(step * 10, {"charts/episodic_return": float(step)})
    logger.log(100_000, {"eval/episodic_return": 123.4})
    logger.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines  # the evaluation line; close() does not repeat it
    assert "step 100,000/100,000" in lines[0] and "eval 123.4" in lines[0] and "return 10000.0" in lines[0]
    assert "steps/s" in lines[0]


def test_console_logger_prints_periodically_and_on_close():
    stream = io.StringIO()
    logger = ConsoleLogger(total_steps=1000, stream=stream, log_interval_s=0.0)
    logger.log(10, {"charts/episodic_return": 1.0})
    logger.log(500, {"charts/episodic_return": 2.0})
    logger.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2 and "step 500/1,000" in lines[-1] and "ETA" in lines[-1]


def test_recording_logger_series():
    logger = RecordingLogger()
    logger.log(1, {"a": 1.0})
    logger.log(2, {"b": 2.0, "a": 3.0})
    assert logger.series("a") == [(1, 1.0), (2, 3.0)]
