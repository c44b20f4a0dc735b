"""transformers' LOAD REPORT: the unexpected position_ids buffer of old checkpoints is dropped,
any other entry is still logged whole."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from transformers.modeling_utils import logger as loading_logger
from transformers.utils.loading_report import LoadStateDictInfo, log_state_dict_report

from detectors.load_report import quiet_position_ids_reports
from tests.detectors.test_groundedness import _tiny_nli
from tests.detectors.test_toxicity import DETOXIFY, _tiny_model


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def kept() -> Iterator[_Kept]:
    """What transformers' loading logger lets through, with the filter installed."""
    quiet_position_ids_reports()
    quiet_position_ids_reports()  # once per process, however often it is called
    assert sum(type(f).__name__ == "_PositionIdsOnly" for f in loading_logger.filters) == 1
    handler = _Kept()
    loading_logger.addHandler(handler)
    try:
        yield handler
    finally:
        loading_logger.removeHandler(handler)


class BertModel:
    """Stands in for the model: the report only reads its class name."""


def _report(missing: set[str] = frozenset(), unexpected: set[str] = frozenset()) -> None:
    info = LoadStateDictInfo(missing_keys=set(missing), unexpected_keys=set(unexpected),
                             mismatched_keys=set(), error_msgs=[], conversion_errors={})
    log_state_dict_report(BertModel(), "/models/old-bert", False, info, logger=loading_logger)


def test_a_report_of_only_unexpected_position_ids_is_dropped(kept: _Kept) -> None:
    _report(unexpected={"embeddings.position_ids"})
    _report(unexpected={"bert.embeddings.position_ids", "roberta.embeddings.position_ids"})
    assert kept.messages == []


@pytest.mark.parametrize(("missing", "unexpected", "shown"), [
    ({"classifier.weight"}, set(), "classifier.weight"),  # initialised at random: must be seen
    (set(), {"pooler.dense.weight"}, "pooler.dense.weight"),
    ({"classifier.bias"}, {"embeddings.position_ids"}, "classifier.bias"),
    ({"embeddings.position_ids"}, set(), "MISSING"),  # only the unexpected one is known harmless
])
def test_any_other_entry_keeps_the_whole_report(kept: _Kept, missing: set[str],
                                                unexpected: set[str], shown: str) -> None:
    _report(missing, unexpected)
    assert len(kept.messages) == 1
    assert "LOAD REPORT" in kept.messages[0] and shown in kept.messages[0]
    assert all(key in kept.messages[0] for key in missing | unexpected)


def test_other_warnings_of_that_logger_pass(kept: _Kept) -> None:
    loading_logger.warning("Some weights of the model checkpoint were not used")
    assert kept.messages == ["Some weights of the model checkpoint were not used"]


@pytest.mark.slow
def test_loading_the_default_embedder_logs_no_report(kept: _Kept) -> None:
    # all-MiniLM-L6-v2's checkpoint holds embeddings.position_ids: the report it used to cause.
    from detectors.embedder import Embedder

    Embedder(device="cpu")
    assert not [m for m in kept.messages if "LOAD REPORT" in m]


@pytest.fixture
def progress_bar_on() -> Iterator[None]:
    """transformers' progress bar on, as in a fresh process (another test's load may have
    turned it off for the whole process), and on again after the test."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.enable_progress_bar()
    yield
    transformers_logging.enable_progress_bar()


def test_loading_a_toxicity_model_draws_no_progress_bar(
        tmp_path: Path, progress_bar_on: None, capfd: pytest.CaptureFixture[str]) -> None:
    from detectors.toxicity import TransformersToxicityScorer

    folder = _tiny_model(tmp_path / "tox", DETOXIFY, "multi_label_classification")
    capfd.readouterr()
    scorer = TransformersToxicityScorer(folder)
    assert scorer.score(["you idiot"]).shape == (1,)
    assert "Loading weights" not in capfd.readouterr().err


def test_loading_an_nli_model_draws_no_progress_bar(
        tmp_path: Path, progress_bar_on: None, capfd: pytest.CaptureFixture[str]) -> None:
    from detectors.groundedness import NliSupport

    folder = _tiny_nli(tmp_path / "nli")
    capfd.readouterr()
    nli = NliSupport(folder)
    assert nli.entailment(["The tower is tall."], ["It is tall."]).shape == (1,)
    assert "Loading weights" not in capfd.readouterr().err
