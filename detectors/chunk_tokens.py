"""A BERT-style tokenizer's ids for a text, put together from the ids of its chunks, each chunk
tokenized once and then read from a cache.

Tokenizing is most of a static embedding's cost (about 2 us a token in Hugging Face tokenizers,
most of it normalizing), and traffic repeats its words. A BertNormalizer and BertPreTokenizer
work character by character, and an ASCII space, tab, newline or return, or an ASCII
punctuation mark, is left as it is by the normalizer and always ends a pre-token (a space is
dropped, a mark stands alone). So cut at those characters, a text's ids are its chunks' ids
one after the other: each chunk goes through the same tokenizer, which still does every
normalization, Unicode included; only the cutting is done here. The truncation to the
tokenizer's max length is applied to the joined ids, as the tokenizer applies it to the text.
A text holding an added token's content (`[UNK]`, `[PAD]`, ...), which the tokenizer matches
across chunks, goes through the tokenizer whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np

# A run of characters that are neither an ASCII space, tab, newline, return nor ASCII
# punctuation, or one ASCII punctuation mark. Other ASCII controls are not cut at: the
# normalizer drops them and joins their neighbours (b"ab\x0bcd" is one word).
_CHUNK = re.compile(r"[^ \t\n\r!-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]")


def supports(tokenizer: Any) -> bool:
    """Whether `tokenizer` (a `tokenizers.Tokenizer`) tokenizes a text as its chunks joined:
    a BERT normalizer (or none), the BERT pre-tokenizer, added tokens matched on raw text, and
    neither padding nor truncation other than keeping the first tokens."""
    config = json.loads(tokenizer.to_str())
    normalizer = config.get("normalizer")
    pre_tokenizer = config.get("pre_tokenizer") or {}
    truncation = config.get("truncation")
    padding = config.get("padding")
    return ((normalizer is None or normalizer.get("type") == "BertNormalizer")
            and pre_tokenizer.get("type") == "BertPreTokenizer"
            and config.get("model", {}).get("type") == "WordPiece"
            and all(not t.get("normalized") for t in config.get("added_tokens", []))
            and (truncation is None
                 or (truncation.get("direction") == "Right" and not truncation.get("stride")))
            # model2vec turns padding off by padding to length 0
            and (padding is None or (padding.get("strategy") == {"Fixed": 0}
                                     and not padding.get("pad_to_multiple_of"))))


class ChunkTokenizer:
    """Ids of texts as `tokenizer.encode_batch_fast(texts, add_special_tokens=False)` gives
    them (truncation included), from a cache of at most `max_chunks` chunks and `max_chars`
    characters (or one batch's, if it holds more); callers hold a lock if they share one.

    The cache is one flat array of every cached chunk's ids, with each chunk's row (its start
    and end there) in a dict: a batch's ids are gathered in numpy, one dict lookup a chunk,
    with no Python list a text unless `encode` is asked for them."""

    def __init__(self, tokenizer: Any, max_chunks: int = 200_000,
                 max_chars: int = 16_000_000) -> None:
        """`max_chars`: the cached chunks' characters in all (a bound in bytes as well as in
        count: one long "word", such as a hex dump, is one chunk)."""
        self._tokenizer = tokenizer
        self._max_chunks = max_chunks
        self._max_chars = max_chars
        self._added = [t.content for t in tokenizer.get_added_tokens_decoder().values()]
        self._clear()

    def _clear(self) -> None:
        self._index: dict[str, int] = {}  # chunk -> its row
        self._chars = 0
        self._bounds = _Growing()  # row i's ids: _ids[_bounds[i]:_bounds[i + 1]]
        self._bounds.extend(np.zeros(1, np.int64))
        self._ids = _Growing()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return unflatten(*self.encode_flat(texts))

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """`encode`'s rows one after another (int64), and how many ids each row has."""
        chunked = [None if any(a in text for a in self._added) else _CHUNK.findall(text)
                   for text in texts]
        seen = set().union(*(c for c in chunked if c is not None))
        missing = seen.difference(self._index)
        if (len(self._index) + len(missing) > self._max_chunks
                or self._chars + sum(map(len, missing)) > self._max_chars):
            self._clear()  # bounded: unrepeated traffic (random strings) must not grow it
            missing = seen
        self._store(list(missing))
        counts = np.fromiter((0 if c is None else len(c) for c in chunked), np.int64,
                             len(chunked))
        rows = np.fromiter(map(self._index.__getitem__,
                               chain.from_iterable(c for c in chunked if c is not None)),
                           np.int64, int(counts.sum()))
        bounds = self._bounds.view()
        starts = bounds[rows]
        sizes = bounds[rows + 1] - starts
        ends = np.cumsum(sizes)
        total = int(ends[-1]) if len(ends) else 0
        # Each chunk's ids in place: position p of chunk j reads its row at p - (end_j - size_j).
        flat = self._ids.view()[np.arange(total) + np.repeat(starts - ends + sizes, sizes)]
        text_ends = np.concatenate([[0], ends])[np.cumsum(counts)]
        lengths = np.diff(text_ends, prepend=0)
        truncation = self._tokenizer.truncation
        limit = truncation["max_length"] if truncation else None
        if limit is not None and len(lengths) and lengths.max() > limit:
            offset = np.arange(total) - np.repeat(text_ends - lengths, lengths)
            flat, lengths = flat[offset < limit], np.minimum(lengths, limit)
        if any(c is None for c in chunked):  # rare: put the texts tokenized whole in place
            wholes = iter(self._tokenize([t for t, c in zip(texts, chunked, strict=True)
                                          if c is None]))
            pieces = np.split(flat, np.cumsum(lengths)[:-1])
            joined = [np.asarray(next(wholes), np.int64) if c is None else piece
                      for c, piece in zip(chunked, pieces, strict=True)]
            lengths = np.fromiter(map(len, joined), np.int64, len(joined))
            flat = np.concatenate(joined)
        return flat, lengths

    def _store(self, chunks: list[str]) -> None:
        if not chunks:
            return
        ids, sizes = flatten(self._tokenize(chunks))
        first = len(self._index)  # rows are numbered in the order they are stored
        self._index.update(zip(chunks, range(first, first + len(chunks)), strict=True))
        self._chars += sum(map(len, chunks))
        self._bounds.extend(len(self._ids) + np.cumsum(sizes))
        self._ids.extend(ids)

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [e.ids for e in self._tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def flatten(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ids one after another (int64), and how many each row has."""
    lengths = np.fromiter(map(len, rows), np.int64, len(rows))
    return np.fromiter(chain.from_iterable(rows), np.int64, int(lengths.sum())), lengths


def unflatten(flat: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    """The rows that `flatten` joined."""
    ids, ends = flat.tolist(), np.cumsum(lengths).tolist()
    return [ids[end - n:end] for end, n in zip(ends, lengths.tolist(), strict=True)]


class _Growing:
    """An int64 array appended to in place (its capacity doubles), read through `view`."""

    def __init__(self) -> None:
        self._data = np.empty(1024, np.int64)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def extend(self, values: np.ndarray) -> None:
        end = self._size + len(values)
        if end > len(self._data):
            grown = np.empty(max(end, 2 * len(self._data)), np.int64)
            grown[:self._size] = self._data[:self._size]
            self._data = grown
        self._data[self._size:end] = values
        self._size = end

    def view(self) -> np.ndarray:
        return self._data[:self._size]


class WrappedChunkTokenizer:
    """Ids of texts as the tokenizer gives them with its special tokens (`[CLS] text [SEP]`),
    truncated to `max_length` ids in all as Hugging Face truncates (the text's own ids are cut,
    the special tokens kept), read by chunks. `create` returns None where that does not hold:
    a tokenizer that cannot be read by chunks, or whose post-processor does more than put
    fixed ids before and after a text's (with token type 0 throughout)."""

    def __init__(self, chunks: ChunkTokenizer, prefix: list[int], suffix: list[int]) -> None:
        self._chunks, self._prefix, self._suffix = chunks, prefix, suffix
        self.special = len(prefix) + len(suffix)  # ids added to each text

    @classmethod
    def create(cls, tokenizer: Any, max_length: int,
               max_chunks: int = 200_000) -> WrappedChunkTokenizer | None:
        from tokenizers import Tokenizer

        bare = Tokenizer.from_str(tokenizer.to_str())  # its own copy: settings are mutable
        bare.no_truncation()
        bare.no_padding()
        wrap = _wrapping(bare)
        if wrap is None or not supports(bare):
            return None
        prefix, suffix = wrap
        if max_length <= len(prefix) + len(suffix):
            return None
        bare.enable_truncation(max_length - len(prefix) - len(suffix))
        return cls(ChunkTokenizer(bare, max_chunks), prefix, suffix)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        prefix, suffix = self._prefix, self._suffix
        return [prefix + ids + suffix for ids in self._chunks.encode(texts)]

    def cut(self, ids: list[int], max_length: int) -> list[int]:
        """Ids from `encode` cut to `max_length` in all as Hugging Face cuts them: the text's
        own ids are cut, the special ones after them kept."""
        if len(ids) <= max_length:
            return ids
        return ids[:max_length - len(self._suffix)] + ids[len(ids) - len(self._suffix):]


def _wrapping(tokenizer: Any) -> tuple[list[int], list[int]] | None:
    """The ids the post-processor puts before and after a text's own, if they are the same
    for every text (two probes of different lengths agree) and every type id is 0."""
    found = set()
    for probe in ("a", "b. c d"):
        own = tokenizer.encode(probe, add_special_tokens=False).ids
        full = tokenizer.encode(probe, add_special_tokens=True)
        for start in range(len(full.ids) - len(own) + 1):
            if full.ids[start:start + len(own)] == own:
                break
        else:
            return None
        if any(full.type_ids):
            return None
        found.add((tuple(full.ids[:start]), tuple(full.ids[start + len(own):])))
    if len(found) != 1:
        return None
    prefix, suffix = found.pop()
    return list(prefix), list(suffix)
