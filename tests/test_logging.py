"""The package's log output (poc_kernels._log): INFO records printed in vLLM's format, the level and the opt-out."""

import logging

import pytest

from poc_kernels._log import CONFIGURE, LEVEL, configure_logging


@pytest.fixture
def fresh_logger(monkeypatch):
    """The ``poc_kernels`` logger with no handler, restored afterwards."""
    root = logging.getLogger("poc_kernels")
    saved = root.handlers[:], root.level, root.propagate
    root.handlers[:] = []
    monkeypatch.delenv(LEVEL, raising=False)
    monkeypatch.delenv(CONFIGURE, raising=False)
    yield root
    root.handlers[:], root.level, root.propagate = saved


def test_info_records_are_printed_once(fresh_logger, capsys):
    logging.getLogger("poc_kernels.node").info("before")  # Python's defaults drop it
    configure_logging()
    configure_logging()  # a second call adds no second handler
    logging.getLogger("poc_kernels.node").info("poc_event=%s", "round_start")
    lines = [line for line in capsys.readouterr().out.splitlines() if "poc_kernels" in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith("INFO ") and lines[0].endswith("[poc_kernels.node] poc_event=round_start")
    assert fresh_logger.propagate is False  # a configured root logger does not print it twice


def test_the_level_and_the_opt_out(fresh_logger, capsys, monkeypatch):
    monkeypatch.setenv(LEVEL, "warning")
    configure_logging()
    log = logging.getLogger("poc_kernels.vllm")
    log.info("quiet")
    log.warning("loud")
    out = capsys.readouterr().out
    assert "quiet" not in out and "WARNING" in out and "loud" in out

    fresh_logger.handlers[:] = []
    monkeypatch.setenv(CONFIGURE, "0")
    configure_logging()
    assert fresh_logger.handlers == []


def test_a_bad_level_names_the_variable(fresh_logger, monkeypatch):
    monkeypatch.setenv(LEVEL, "LOUD")
    with pytest.raises(ValueError, match=f"{LEVEL}: must be one of DEBUG.*'LOUD'"):
        configure_logging()
    assert fresh_logger.handlers == []


def test_an_application_handler_is_kept(fresh_logger):
    mine = logging.NullHandler()
    fresh_logger.addHandler(mine)
    configure_logging()
    assert fresh_logger.handlers == [mine]
