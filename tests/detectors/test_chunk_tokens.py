"""Chunked tokenizing: the ids the tokenizer gives a whole text, Unicode, controls, added
tokens and truncation included; each chunk tokenized once; a bounded cache."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from detectors.chunk_tokens import ChunkTokenizer, WrappedChunkTokenizer, supports
from detectors.embedder import resolve_model_path
from monitor.local.traffic import load_examples

# Pieces that stress the cut: ASCII controls the normalizer drops (joining their neighbours),
# Unicode whitespace and punctuation, accents as one code point and as a combining mark after
# ASCII punctuation, CJK (split per character), a singleton decomposing to ASCII ';' (U+037E),
# final sigma, ligatures, emoji, and the added tokens' contents in and out of case.
PIECES = [*"abcXYZ019 \t\n\r\x0b\x0c\x00\x01\x1f\x7f.,;'\"[]!-_`~{}()#@", "é", "e\u0301",
          "!\u0301", "ß", "İ", "Σ", "ς", "中", "文", "\u00a0", "\u2003", "\u037e", "\ufffd",
          "\u200b", "ǅ", "ﬁ", "\U0001f600", "[UNK]", "[PAD]", "[unk]", " [CLS] ", "[SEP",
          "\u2019", "\u2014", "Å", "\u212b", "naïve", "anti-", "ization"]


@pytest.fixture(scope="module")
def bert() -> Tokenizer:
    """The default model's tokenizer (bert-base-uncased's WordPiece; truncation at 128) with
    padding off, as model2vec uses it."""
    tokenizer = Tokenizer.from_file(str(Path(resolve_model_path(None)) / "tokenizer.json"))
    assert tokenizer.padding is not None and not supports(tokenizer)  # it pads chunks
    tokenizer.no_padding()
    return tokenizer


def _reference(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def _chunked(chunks: ChunkTokenizer, texts: list[str], batch: int) -> list[list[int]]:
    return [ids for i in range(0, len(texts), batch) for ids in chunks.encode(texts[i:i + batch])]


def test_random_texts_get_the_tokenizers_ids(bert: Tokenizer) -> None:
    rng = random.Random(7)
    texts = ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 80)))
             for _ in range(20_000)]
    assert supports(bert)
    assert _chunked(ChunkTokenizer(bert), texts, 64) == _reference(bert, texts)


def test_real_texts_get_the_tokenizers_ids_truncated_as_it_truncates(bert: Tokenizer) -> None:
    texts = [t for e in load_examples(300) for t in (*e.context, e.right, e.hallucinated)]
    assert len(texts) > 1_500 and sum(not t.isascii() for t in texts) > 50
    assert _chunked(ChunkTokenizer(bert), texts, 200) == _reference(bert, texts)
    short = Tokenizer.from_str(bert.to_str())
    short.enable_truncation(12)  # cut mid-chunk and mid-word
    got = _chunked(ChunkTokenizer(short), texts, 200)
    assert got == _reference(short, texts)
    assert max(map(len, got)) == 12


class _Counting:
    """The tokenizer, counting the texts it is asked to tokenize."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer, self.texts = tokenizer, []

    def encode_batch_fast(self, texts: list[str], add_special_tokens: bool) -> list[Any]:
        self.texts.extend(texts)
        return self.tokenizer.encode_batch_fast(texts, add_special_tokens=add_special_tokens)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


def test_each_chunk_is_tokenized_once_and_the_cache_is_bounded(bert: Tokenizer) -> None:
    counting = _Counting(bert)
    chunks = ChunkTokenizer(counting)
    first = chunks.encode(["The cat sat.", "the cat, the mat"])
    assert sorted(counting.texts) == sorted({"The", "cat", "sat", ".", "the", ",", "mat"})
    counting.texts.clear()
    assert chunks.encode(["the mat sat.\tThe cat"]) == _reference(bert, ["the mat sat. The cat"])
    assert counting.texts == []  # every chunk met before
    assert first == _reference(bert, ["The cat sat.", "the cat, the mat"])
    assert chunks.encode(["a [UNK] b"]) == _reference(bert, ["a [UNK] b"])
    assert counting.texts == ["a [UNK] b"]  # an added token's content: the whole text

    small = ChunkTokenizer(bert, max_chunks=50)
    rng = random.Random(3)
    texts = [" ".join(f"w{rng.randrange(10_000)}" for _ in range(30)) for _ in range(200)]
    assert _chunked(small, texts, 1) == _reference(bert, texts)
    assert len(small._index) <= 50  # of about 5,000 chunks met
    # Bounded in characters too: long "words" (hex dumps) are one chunk each.
    narrow = ChunkTokenizer(bert, max_chars=10_000)
    dumps = [f"{i:x}" * 600 + " tail" for i in range(4_096, 4_116)]  # 2,400 characters each
    for start in range(0, len(dumps), 2):
        assert narrow.encode(dumps[start:start + 2]) == _reference(bert, dumps[start:start + 2])
        assert sum(map(len, narrow._index)) <= 10_000
    assert narrow._chars == sum(map(len, narrow._index)) > 0


def test_other_tokenizers_are_not_chunked(bert: Tokenizer) -> None:
    byte_level = Tokenizer(models.BPE())
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel()
    assert not supports(byte_level)
    spec = json.loads(bert.to_str())
    spec["added_tokens"][0]["normalized"] = True  # matched on normalized text, across chunks
    assert not supports(Tokenizer.from_str(json.dumps(spec)))
    left = Tokenizer.from_str(bert.to_str())
    left.enable_truncation(8, direction="left")
    assert not supports(left)


def _wrapped_reference(tokenizer: Tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """What Hugging Face gives with special tokens, truncated to `max_length` in all."""
    full = Tokenizer.from_str(tokenizer.to_str())
    full.enable_truncation(max_length)
    return [e.ids for e in full.encode_batch_fast(texts, add_special_tokens=True)]


@pytest.mark.parametrize("max_length", [257, 12])
def test_wrapped_ids_are_the_tokenizers_with_special_tokens_truncated_as_it_truncates(
    bert: Tokenizer, max_length: int
) -> None:
    rng = random.Random(11)
    texts = ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 80)))
             for _ in range(5_000)]
    texts += [t for e in load_examples(300) for t in (e.prompt if isinstance(e.prompt, str)
                                                      else e.prompt[-1]["content"], e.right)]
    wrapped = WrappedChunkTokenizer.create(bert, max_length)
    assert wrapped is not None and wrapped.special == 2
    got = _chunked(wrapped, texts, 100)
    assert got == _wrapped_reference(bert, texts, max_length)
    assert max(map(len, got)) == max_length and min(map(len, got)) == 2  # [CLS] [SEP]
    assert bert.truncation is not None and bert.truncation["max_length"] == 128  # untouched
    # Read one id longer (the embedder's way to tell a cut text), then cut to the limit: the
    # ids Hugging Face gives at the limit, [SEP] kept.
    longer = WrappedChunkTokenizer.create(bert, max_length + 1)
    assert longer is not None
    assert [longer.cut(ids, max_length) for ids in _chunked(longer, texts, 100)] == got


def test_a_post_processor_that_does_more_than_wrap_a_text_is_not_chunked(
    bert: Tokenizer
) -> None:
    typed = Tokenizer.from_str(bert.to_str())
    typed.post_processor = processors.TemplateProcessing(
        single="[CLS]:1 $A:1 [SEP]:1", special_tokens=[("[CLS]", 101), ("[SEP]", 102)])
    assert WrappedChunkTokenizer.create(typed, 64) is None  # type ids other than 0
    none = Tokenizer.from_str(bert.to_str())
    none.post_processor = None
    bare = WrappedChunkTokenizer.create(none, 64)
    assert bare is not None and bare.special == 0
    assert bare.encode(["The cat."]) == [[1996, 4937, 1012]]
    assert WrappedChunkTokenizer.create(bert, 2) is None  # no room for a text's own ids
