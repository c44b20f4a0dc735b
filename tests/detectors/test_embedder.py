"""The shared embedder: offline default model, token-budget batching, dedup cache, CPU paths."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.embedder import (
    Embedder,
    ModelNotFound,
    _padded,
    pick_device,
    resolve_model_path,
)
from monitor.local import traffic

# Loads a model, calibrates a detector or simulates at length: not in make test-fast.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def texts() -> list[str]:
    records = traffic.wire_records(300, seed=21, start_ms=traffic.FIXED_START_MS)
    return [str(r["response"]) for r in records if r.get("response")][:160]


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    return Embedder(device="cpu", backend="torch", precision="fp32")


def test_vectors_are_unit_length_and_match_sentence_transformers(
    torch_embedder: Embedder, texts: list[str]
) -> None:
    # Long contexts too: a text past the model's limit is cut as sentence-transformers cuts
    # it, its end token kept (dropping the ids past the limit gave cosine 0.997).
    sample = texts[:40] + [e.context[0] for e in traffic.load_examples(20)] + ["word " * 400]
    ours = torch_embedder.encode(sample)
    reference = torch_embedder._st.encode(sample, normalize_embeddings=True)
    assert ours.shape == (len(sample), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert torch_embedder.stats.truncated >= 10
    assert float((ours * reference).sum(axis=1).min()) > 0.99999


def test_identical_texts_are_embedded_once_and_cache_hits_return_the_same_vector() -> None:
    embedder = Embedder(device="cpu", backend="torch", precision="fp32", cache_size=100)
    first = embedder.encode(["You are a helpful assistant.", "hello", "hello"])
    stats = embedder.stats.take()
    assert stats.embedded == 2 and stats.cache_hits == 1
    again = embedder.encode(["hello", "You are a helpful assistant."])
    stats = embedder.stats.take()
    assert stats.embedded == 0 and stats.cache_hits == 2
    np.testing.assert_array_equal(again[0], first[1])
    np.testing.assert_array_equal(again[1], first[0])
    np.testing.assert_array_equal(first[1], first[2])


def test_batches_stay_within_the_token_budget_and_truncation_is_counted() -> None:
    embedder = Embedder(device="cpu", backend="torch", token_budget=512, max_batch=64)
    long_text = "word " * 2_000
    embedder.encode([f"sentence number {i}" for i in range(100)] + [long_text])
    stats = embedder.stats.take()
    assert stats.truncated == 1
    assert sum(stats.batches) == 101
    # 100 short texts (~5 tokens) fit many per call; the 256-token one needs a call of its own.
    assert max(stats.batches) > 1 and stats.batches[-1] == 1
    assert max(stats.batches) * 8 <= 512 or len(stats.batches) > 1


def test_onnx_fp32_matches_torch_and_int8_stays_within_the_stated_cosine(
    torch_embedder: Embedder, texts: list[str]
) -> None:
    reference = torch_embedder.encode(texts)
    fp32 = Embedder(device="cpu", backend="onnx", precision="fp32").encode(texts)
    assert float((reference * fp32).sum(axis=1).min()) > 0.9999
    int8 = Embedder(device="cpu", backend="onnx", precision="int8").encode(texts)
    cosine = (reference * int8).sum(axis=1)
    # Measured on these HaluEval responses: mean 0.957, min 0.85 (dynamic int8 of MiniLM).
    assert float(cosine.mean()) >= 0.93
    assert float(cosine.min()) >= 0.80


def test_a_model_that_is_not_on_disk_is_a_clear_error_naming_the_setting(tmp_path) -> None:
    with pytest.raises(ModelNotFound, match=r"scoring\.embedding\.model='.*nowhere'.*never"):
        resolve_model_path(str(tmp_path / "nowhere"))
    with pytest.raises(ModelNotFound, match="never downloads"):
        resolve_model_path("some-org/not-cached-model")


@pytest.mark.parametrize("files", [{}, {"config.json": "{}"}])
def test_a_directory_without_a_model_is_a_clear_one_line_error(tmp_path, files) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ModelNotFound) as refused:
        Embedder(str(tmp_path), device="cpu")
    message = str(refused.value)
    assert message.startswith(f"scoring.embedding.model={str(tmp_path)!r} is a directory")
    assert "holds no model" in message and "\n" not in message, message


def test_device_choice_falls_back_to_cpu_and_refuses_absent_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        assert pick_device("auto") == "cuda"
    else:
        assert pick_device("auto") == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA device"):
            pick_device("cuda")


def test_fp32_precision_computes_in_fp32_from_a_half_precision_checkpoint(tmp_path) -> None:
    """Many checkpoints are saved in fp16 or bf16, and transformers 5 loads a model in its
    checkpoint's dtype: precision fp32 (the CPU default) must still compute in fp32."""
    import torch

    from tests.detectors.tiny_model import halve_checkpoint, tiny_sentence_transformer

    folder = tiny_sentence_transformer(tmp_path / "half", seed=2)
    full = Embedder(str(folder), device="cpu", backend="torch", precision="fp32")
    halve_checkpoint(folder)
    half = Embedder(str(folder), device="cpu", backend="torch", precision="fp32")
    assert {p.dtype for p in half._st.parameters()} == {torch.float32}
    texts = ["the checkpoint is half precision", "the model runs in full precision"]
    # The same vectors up to the weights' rounding to fp16.
    assert float((half.encode(texts) * full.encode(texts)).sum(axis=1).min()) > 0.999


def test_the_transformer_attends_without_cudnn_attention(tmp_path, monkeypatch) -> None:
    """cuDNN's attention builds a plan per input shape (a third to a half of an H200 scoring
    process's busy time); the embedder's forward leaves it out."""
    from tests.detectors.tiny_model import attention_spy, tiny_sentence_transformer

    embedder = Embedder(str(tiny_sentence_transformer(tmp_path / "m", seed=3)), device="cpu",
                        backend="torch", precision="fp32")
    allowed = attention_spy(monkeypatch)
    embedder.encode(["a short text", "a somewhat longer text than the first one"])
    assert allowed == [False]  # one layer, one batch


def test_chunked_ids_and_padding_are_the_tokenizers_and_give_the_same_vectors(
    texts: list[str]
) -> None:
    """The embedder reads ids by cached chunks (detectors.chunk_tokens) and pads them itself:
    the same ids as the tokenizer's own call, cut at max_length + 1, the same padded inputs as
    `tokenizer.pad`, and so the same vectors to the bit."""
    contexts = [e.context[0] for e in traffic.load_examples(60)]  # long: cut
    sample = [*texts, *contexts, "", "a [UNK] b", " \t ", "ﬁ naïve 中文 e\u0301", "x" * 600]
    chunked = Embedder(device="cpu", backend="torch", precision="fp32")
    plain = Embedder(device="cpu", backend="torch", precision="fp32")
    plain._chunks = None  # the tokenizer's own call and pad, as before
    assert chunked._chunks is not None
    reference = chunked.tokenizer(sample, truncation=True, max_length=chunked.max_length + 1,
                                  add_special_tokens=True)
    assert chunked._tokenize(sample)["input_ids"] == reference["input_ids"]
    assert max(map(len, reference["input_ids"])) == chunked.max_length + 1
    rows = {name: [reference[name][i] for i in range(0, len(sample), 7)] for name in reference}
    want = chunked.tokenizer.pad(rows, return_tensors="np")
    got = _padded(rows["input_ids"], chunked.tokenizer.pad_token_id,
                  chunked.tokenizer.model_input_names)
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    np.testing.assert_array_equal(chunked.encode(sample), plain.encode(sample))
    assert chunked.stats.truncated == plain.stats.truncated >= 50  # of 180 contexts
