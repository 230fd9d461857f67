"""status.progress from a progress line: the fraction weighs stages by predicted seconds; the ETA."""

from __future__ import annotations

from influence_trace.api.progress import Progress
from influence_trace.api.status import AttemptRecord, EstimateStatus, ProgressStatus, TraceStatus
from influence_trace_operator.adapters.progress_reader import finish, fraction, restart, to_status

SECONDS = {"setup": 30.0, "capture": 99.0, "hessian": 299.0}  # +1 s each: capture 100, hessian 300


def test_fraction_counts_finished_stages_and_this_stage_share() -> None:
    assert fraction(Progress("capture", 50, 100, "batch", 10.0), SECONDS) == 50 / 400
    assert fraction(Progress("hessian", 98, 196, "module", 10.0), SECONDS) == (100 + 150) / 400
    assert fraction(Progress("hessian", 196, 196, "module", 10.0), SECONDS) == 1.0
    assert fraction(Progress("capture", 3, 4, "batch", 1.0), {}) == 0.75  # no prediction: the stage's share
    tiny = {"capture": 0.0, "hessian": 0.0}  # a tiny trace: equal weights, still monotone across stages
    assert fraction(Progress("capture", 1, 1, "batch", 1.0), tiny) == 0.5
    assert fraction(Progress("hessian", 1, 14, "module", 1.0), tiny) > 0.5


def test_status_text_and_eta_follow_the_real_speed() -> None:
    s = to_status(Progress("hessian", 57, 196, "module", 120.0, None), SECONDS, "2026-11-26T13:00:00Z")
    done = (100 + 300 * 57 / 196) / 400
    assert s.text == "57/196 modules" and s.stage == "hessian" and abs(s.fraction - round(done, 4)) < 1e-9
    assert abs(s.eta_seconds - round(120.0 * (1 - done) / done, 1)) < 0.11 and s.eta == "2m"
    status = TraceStatus(progress=s, attempt=1, estimate=EstimateStatus(seconds=840.0),
                         attempts=[AttemptRecord(attempt=1, pool="h100", job="t-a1",
                                                 started_at="2026-11-26T13:00:00Z",
                                                 finished_at="2026-11-26T13:00:41Z", outcome="Succeeded")])
    assert finish(status) == "took 41s, predicted 14m"
    assert status.progress == s.model_copy(update={"fraction": 1.0, "text": "done", "eta_seconds": 0.0,
                                                   "eta": "0s", "actual_seconds": 41.0})
    assert isinstance(status.progress, ProgressStatus)


def test_the_training_step_travels_from_the_line_to_the_step_column() -> None:
    from influence_trace.api.progress import Reporter, parse_line
    from influence_trace.api.status import ResultStatus

    lines: list[str] = []

    class Sink:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

    reporter = Reporter(interval=0.0, stream=Sink())  # type: ignore[arg-type]  # a stand-in stream, not a TextIO
    reporter.training = (3, 10)
    list(reporter.track(range(2), "capture", "batch", 2))
    progress = parse_line(lines[0])
    assert (progress.train_step, progress.train_steps) == (3, 10)
    status = TraceStatus(progress=to_status(progress, SECONDS, "2026-11-26T13:00:00Z"))
    assert status.progress.training_step == "3/10"
    assert to_status(Progress("capture", 1, 2, "batch", 1.0), SECONDS, "now").training_step is None
    status.result = ResultStatus(steps="10/10")
    finish(status)
    assert status.progress.training_step == "10/10" and status.progress.text == "done"


def test_units_read_right_and_a_new_attempt_shows_the_prediction_again() -> None:
    assert to_status(Progress("capture", 2, 3, "batch", 5.0), SECONDS, "now").text == "2/3 batches"
    assert to_status(Progress("hessian", 1, 1, "module", 5.0), SECONDS, "now").text == "1/1 module"
    status = TraceStatus(estimate=EstimateStatus(seconds=840.0, time="2s left"),
                         progress=to_status(Progress("hessian", 5, 14, "module", 9.0), SECONDS, "now"))
    restart(status)  # escalated: attempt 2 has not printed anything yet
    assert status.progress is None and status.estimate is not None and status.estimate.time == "14m"


def test_progress_lines_are_for_logs_not_for_a_person_at_a_terminal(monkeypatch) -> None:
    from influence_trace.api.progress import LINES_ENV, Reporter

    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty, self.text = tty, ""

        def isatty(self) -> bool:
            return self.tty

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    for tty, printed in ((False, True), (True, False)):
        stream = Stream(tty)
        reporter = Reporter(interval=0.0, stream=stream)  # type: ignore[arg-type]  # a stand-in, not a TextIO
        list(reporter.track(range(2), "capture", "batch", 2))
        assert ("INFLUENCE_TRACE_PROGRESS" in stream.text) == printed
    monkeypatch.setenv(LINES_ENV, "1")
    stream = Stream(True)
    reporter = Reporter(interval=0.0, stream=stream)  # type: ignore[arg-type]  # a stand-in, not a TextIO
    list(reporter.track(range(2), "capture", "batch", 2))
    assert stream.text.count("INFLUENCE_TRACE_PROGRESS") == 2
