"""`serve`'s log lines reach stderr in batches, from a writer thread, and none is lost
when it stops."""

from __future__ import annotations

import io
import json
import time
import uuid
from contextlib import redirect_stderr

from adapters import logs


def test_lines_arrive_from_the_writer_thread_and_all_at_close() -> None:
    stream = io.StringIO()
    batched = logs.BatchedLines(stream)
    try:
        batched.write("one\n")
        batched.flush()  # held: the writer thread writes
        deadline = time.monotonic() + 5
        while not stream.getvalue() and time.monotonic() < deadline:
            time.sleep(logs.FLUSH_SECONDS / 5)
        assert stream.getvalue() == "one\n"
        for number in range(1000):
            batched.write(f"{number}\n")
    finally:
        batched.close()
    assert stream.getvalue().splitlines() == ["one", *map(str, range(1000))]
    batched.write("after\n")  # closed: straight to the stream
    assert stream.getvalue().endswith("999\nafter\n")


def test_structlog_lines_within_batched_log_lines_all_reach_stderr() -> None:
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        logs.configure_logging("info")
        with logs.batched_log_lines():
            assert isinstance(logs._batched, logs.BatchedLines)  # what serve logs through
            log = logs.get_logger("test")
            for number in range(200):
                log.info("step.done", number=number)
    logs.configure_logging("info")  # back on the real stderr, for the tests after this
    lines = [json.loads(line) for line in stderr.getvalue().splitlines()]
    assert [line["number"] for line in lines] == list(range(200))


def test_a_line_is_one_json_object_with_a_repr_for_what_json_cannot_hold() -> None:
    stderr = io.StringIO()
    opaque, instance_id = object(), uuid.uuid4()
    with redirect_stderr(stderr):
        logs.configure_logging("info")
        logs.get_logger("test").info("step.done", instance_id=instance_id, opaque=opaque,
                                     counts={1: 2}, request_id="req-1")
    logs.configure_logging("info")  # back on the real stderr, for the tests after this
    [line] = [json.loads(text) for text in stderr.getvalue().splitlines()]
    assert line["event"] == "step.done" and line["level"] == "info"
    assert line["instance_id"] == str(instance_id) and line["request_id"] == "req-1"
    assert line["opaque"] == repr(opaque) and line["counts"] == {"1": 2}
    assert line["timestamp"].endswith("Z")


class Tag(str):
    """A str subclass, as some libraries hand out."""


class Described:
    def __structlog__(self) -> str:
        return "described"


def test_a_line_keeps_an_exception_and_values_as_structlog_would_write_them() -> None:
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        logs.configure_logging("info")
        log = logs.get_logger("test")
        try:
            raise RuntimeError("the disk went away")
        except RuntimeError:
            log.exception("drive.crashed", tag=Tag("t1"), described=Described())
    logs.configure_logging("info")  # back on the real stderr, for the tests after this
    [line] = [json.loads(text) for text in stderr.getvalue().splitlines()]
    assert line["event"] == "drive.crashed" and line["level"] == "error"
    assert "Traceback" in line["exception"] and "the disk went away" in line["exception"]
    assert line["tag"] == "t1" and line["described"] == "described"
