"""Groundedness of LLM responses in their own retrieved context, sentence by sentence, per batch.
Exact checks for invented numbers and names, lexical support, embedding (or NLI) for paraphrases."""

from __future__ import annotations

import functools
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ModelNotFound: the one toxicity.py re-exports
from detectors.embedder import ModelNotFound, first_line
from detectors.inference import inference
from detectors.load_report import quiet_model_loading

__all__ = [
    "NLI_SETTING",
    "Embed",
    "GroundednessResult",
    "GroundednessScorer",
    "ModelNotFound",
    "NliSupport",
    "split_sentences",
]

# L2-normalised float32 rows, one per text (the shared embedder provides this).
Embed = Callable[[Sequence[str]], np.ndarray]

NLI_SETTING = "scoring.groundedness.nli_model"

# --- Sentences ---------------------------------------------------------------------------------

# Tokens that end with a period without ending a sentence (lowercase, final period dropped).
_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "rev", "gen", "col", "lt",
    "sgt", "capt", "cmdr", "gov", "sen", "rep", "pres", "hon", "messrs", "vs", "etc", "inc",
    "ltd", "co", "corp", "bros", "no", "nos", "vol", "fig", "approx", "dept", "est", "al",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    "e.g", "i.e", "a.m", "p.m", "u.s", "u.k", "u.n", "ph.d", "b.a", "m.a", "d.c",
})
# Candidate ends: terminal punctuation (and closing quotes or brackets) before whitespace or the
# end, or a period glued to a capitalised word, since HaluEval-style knowledge concatenates
# passages without a space ("19th century.First for Women"). Decimals ("3.5") match neither.
# Both alternatives open with the punctuation (the glued one takes its period into the match),
# so the regex engine skips to those characters instead of trying a lookbehind at each one.
_BOUNDARY = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?:\s+|$)"
                       r"|\.(?<=[a-z]{2}\.)(?=[A-Z][a-z])")
_INITIALS = re.compile(r"^(?:[A-Za-z]\.)*[A-Za-z]$")
_LOOK_BACK = 256  # characters; longer than any abbreviation or run of initials


def _ends_sentence(text: str, start: int, end: int) -> bool:
    if "!" in text[start:end] or "?" in text[start:end]:
        return True
    # "approx. three", "etc. and": a lowercase continuation means the period was not final.
    if text[end:end + 1].islower():
        return False
    # The word before the boundary: a bounded look back, since splitting the whole prefix at
    # every candidate end made long documents quadratic.
    words = text[max(0, start - _LOOK_BACK):start].rsplit(None, 1)
    word = words[-1].lstrip("\"'\u201c\u2018([").rstrip(".") if words else ""
    if not word or word[-1].isdigit():
        return True
    # Single letters and dotted initials ("J.", "J.R.R.") belong to names.
    return word.lower() not in _ABBREVIATIONS and not _INITIALS.match(word)


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, robust to abbreviations ("Dr."), decimals ("3.5") and initials.

    >>> split_sentences("Dr. Smith paid $3.50. Then he left!")
    ['Dr. Smith paid $3.50.', 'Then he left!']
    """
    return [text[begin:end].strip() for begin, end in _sentence_spans(text)]


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """Where `split_sentences`'s sentences lie in `text` (before their spaces are stripped)."""
    spans: list[tuple[int, int]] = []
    begin = 0
    for match in _BOUNDARY.finditer(text):
        if match.end() > begin and _ends_sentence(text, match.start(), match.end()):
            spans.append((begin, match.end()))
            begin = match.end()
    spans.append((begin, len(text)))
    # Empty pieces and bare punctuation ("...", "--") carry no claim.
    return [(b, e) for b, e in spans if any(c.isalnum() for c in text[b:e])]


# --- Exact checks: numbers and names -----------------------------------------------------------

# "1,000.5" (grouped, not glued to a word or a dot) or "1000.5". Written to start with \d, so
# the regex engine skips to digits instead of trying the lookbehind at every character (4x).
_NUMBER = re.compile(r"\d(?:(?<![\w.]\d)\d{0,2}(?:,\d{3})+|\d*)(?:\.\d+)?")
# Runs of 5 digits or more, as \d{5,} finds them; a lookahead the engine tries at digits only
# is 1.6x faster on long contexts.
_DIGIT_RUN = re.compile(r"\d(?=\d{4})\d*")
# The context may spell out a number the response writes in digits ("two hours" vs "2 hours").
_NUMBER_WORDS = {
    word: str(value) for value, word in enumerate((
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
        "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
        "seventeen", "eighteen", "nineteen", "twenty",
    ))
} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70",
     "eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000", "dozen": "12",
     "once": "1", "twice": "2", "first": "1", "second": "2", "third": "3", "fourth": "4",
     "fifth": "5", "half": "0.5"}
_SPELLED = frozenset(_NUMBER_WORDS)
_WORD = re.compile(r"\w+(?:['\u2019]\w+)*")
_POSSESSIVE = re.compile(r"['\u2019]s\b")
# Words that open sentences or clauses rather than names: trimmed from the edges of a name, and
# left out of the lexical check along with the other function words.
_FUNCTION_WORDS = frozenset({
    "a", "an", "the", "this", "that", "these", "those", "there", "here", "it", "its", "he",
    "she", "his", "her", "him", "they", "them", "their", "we", "our", "us", "i", "you",
    "your", "my", "me", "and", "but", "or", "nor", "so", "yet", "if", "when", "while",
    "after", "before", "as", "at", "by", "for", "from", "in", "into", "of", "on", "onto",
    "to", "with", "without", "about", "also", "not", "no", "yes", "yeah", "well", "oh",
    "ok", "okay", "sure", "hi", "hello", "thanks", "thank", "please", "what", "who", "whom",
    "whose", "which", "where", "why", "how", "do", "does", "did", "is", "are", "was",
    "were", "be", "been", "being", "has", "have", "had", "will", "would", "can", "could",
    "should", "may", "might", "must", "shall", "one", "some", "any", "all", "both", "each",
    "every", "many", "most", "more", "other", "such", "than", "then", "just", "only",
    "even", "still", "however", "although", "though", "because", "since", "unless", "until",
    "again", "once", "maybe", "perhaps", "actually", "definitely", "absolutely", "indeed",
    "unfortunately", "s", "t", "d", "ll", "re", "ve", "m",
})
# Lowercase particles that may sit inside a name ("Prince of Wales", "Ludwig van Beethoven").
_NAME_PARTICLES = frozenset({"of", "the", "de", "del", "della", "da", "di", "du", "van", "von",
                             "der", "den", "la", "le", "al", "bin", "y"})
_NAME_EDGES = _FUNCTION_WORDS | _NAME_PARTICLES  # trimmed from a name's end
_QUOTED = re.compile(r"[\"“]([^\"“”]{2,120})[\"”]")
_CLOSERS = "\"'\u201d\u2019)] "


@functools.cache
def _code_points() -> tuple[np.ndarray, np.ndarray]:
    """Two tables indexed by code point: combining marks (what accents decompose into), and
    letters and digits (str.isalnum: what the fold keeps). Built once per process, in
    about half a second, at the first text that is not ASCII."""
    chars = [chr(c) for c in range(sys.maxunicode + 1)]
    combining = np.fromiter((unicodedata.combining(ch) != 0 for ch in chars), dtype=bool,
                            count=len(chars))
    alnum = np.fromiter((ch.isalnum() for ch in chars), dtype=bool, count=len(chars))
    return combining, alnum


def _points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _text(points: np.ndarray) -> str:
    return points.tobytes().decode("utf-32-le", "surrogatepass")


# Each ASCII character but letters and digits, to a space: with split() and join(), what a
# `[\W_]+` regex substitution does to an ASCII text, in a fifth of the time.
_ASCII_SPACES = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})
_SPACE = np.uint32(ord(" "))


def _fold(text: str) -> str:
    """Lowercase, accents and possessives dropped, punctuation as single spaces, space-padded."""
    return " " + " ".join(_folded_words(text)) + " "


def _folded_words(text: str) -> list[str]:
    """The words of `_fold(text)`, in order."""
    text = _POSSESSIVE.sub("", text)
    if not text.isascii():  # ASCII has no accents to drop
        # Per code point through lookup tables: str.translate with a dict, and the regex, cost
        # about 0.1 ms per thousand characters that are not all ASCII.
        combining, alnum = _code_points()
        points = _points(unicodedata.normalize("NFKD", text))
        text = _text(points[~combining[points]]).lower()
        if not text.isascii():
            points = _points(text)
            return _text(np.where(alnum[points], points, _SPACE)).split()
    return text.lower().translate(_ASCII_SPACES).split()


def _number(raw: str) -> str:
    """Canonical form: "1,000" == "1000", "3.50" == "3.5", "007" == "7"."""
    digits = raw.replace(",", "")
    if "." in digits:
        digits = digits.rstrip("0").rstrip(".")
    return digits.lstrip("0") or "0"


def _numbers(text: str) -> list[str]:
    return [_number(raw) for raw in _NUMBER.findall(text)]


def _names(sentence: str) -> list[str]:
    """Capitalised runs ("Tom Hanks", "Golden Compass II") and quoted strings of a sentence.

    A lone capitalised word opening the sentence is skipped: capitalisation means nothing there.
    """
    names: list[str] = []
    words = list(_WORD.finditer(sentence))
    run: list[re.Match[str]] = []

    def close() -> None:
        while run and run[-1].group().lower() in _NAME_EDGES:
            run.pop()
        while run and run[0].group().lower() in _FUNCTION_WORDS:
            run.pop(0)
        if run and not (len(run) == 1 and run[0] is words[0]):
            names.append(sentence[run[0].start():run[-1].end()])
        run.clear()

    for i, word in enumerate(words):
        token = word.group()
        if run:
            gap = sentence[words[i - 1].end():word.start()]
            # A name runs over plain spaces, or over the period of an initial ("Philip K. Dick").
            if not (gap.isspace() or (gap.strip() == "." and len(run[-1].group()) == 1)):
                close()
        if token[0].isupper() or (run and token in _NAME_PARTICLES):
            run.append(word)
        else:
            close()
    close()
    names.extend(m.group(1).strip() for m in _QUOTED.finditer(sentence))
    return names


def _content(text: str) -> list[str]:
    """The folded words of `text` that are not function words."""
    return [w for w in _folded_words(text) if w not in _FUNCTION_WORDS]


def _sentence_bags(text: str) -> tuple[list[str], list[set[str]]]:
    """The sentences of `text` and the content words of each, `set(_content(s))`."""
    spans = _sentence_spans(text)
    sentences = [text[begin:end].strip() for begin, end in spans]
    if not text.isascii():
        return sentences, [set(_content(s)) for s in sentences]
    # ASCII folds character for character, but for dropping possessives, whose "s" would be a
    # function word anyway: the whole text folded once and cut at the sentences, a third of
    # the cost of folding each.
    folded = text.lower().translate(_ASCII_SPACES)
    return sentences, [set(folded[begin:end].split()) - _FUNCTION_WORDS
                       for begin, end in spans]


@dataclass(frozen=True)
class _Grounding:
    """What a response may take from its context and prompt, in comparable forms."""

    text: str
    folded: str
    words: frozenset[str]

    # The numbers are read from the context only when a response sentence carries one: a
    # third of a long context's scan, and most responses carry none.
    @functools.cached_property
    def numbers(self) -> frozenset[str]:
        spelled = {_NUMBER_WORDS[w] for w in self.words & _SPELLED}  # the smaller set is walked
        return frozenset(_numbers(self.text)) | spelled

    @functools.cached_property
    def digit_text(self) -> str:
        """The runs of five digits or more, space-separated: a number (no space in it) is in
        one of them exactly when it is in this text, found by one scan instead of one a run."""
        return " ".join(_DIGIT_RUN.findall(self.text))

    def novelty(self, sentence: str) -> float:
        """Share of the sentence's content words found nowhere in the context or prompt."""
        words = _content(sentence)
        return sum(w not in self.words for w in words) / len(words) if words else 0.0


@functools.lru_cache(maxsize=64)
def _grounding(text: str) -> _Grounding:
    # Cached: records of one request (or the A/B answers of an eval pair) share a context.
    words = _folded_words(text)
    return _Grounding(text, " " + " ".join(words) + " ", frozenset(words))


class _Lookups:
    """One response's numbers and names looked up in its grounding, each distinct one once.

    Exact lookups are sets; what is left needs a scan of the whole context (a number glued
    into a longer run of digits, a name's words in their order), and those scans are bounded:
    `searches` per response, so a response of thousands of numbers against a context of
    thousands costs as much as one of a few hundred (it took seconds to minutes a record).
    Past the bound the likelier answer stands: a number found by no exact lookup is novel, a
    name whose every word is in the context is known."""

    def __init__(self, grounding: _Grounding, searches: int) -> None:
        self._grounding = grounding
        self._searches = searches
        self._numbers: dict[str, bool] = {}
        self._names: dict[str, bool] = {}

    def _search(self, needle: str, haystack: str) -> bool | None:
        if self._searches <= 0:
            return None
        self._searches -= 1
        return needle in haystack

    def knows_number(self, number: str) -> bool:
        known = self._numbers.get(number)
        if known is None:
            g = self._grounding
            # Glued knowledge ("released 20072007 was the year") hides years in longer runs.
            known = number in g.numbers or (
                len(number) >= 4 and bool(self._search(number, g.digit_text)))
            self._numbers[number] = known
        return known

    def knows_name(self, name: str) -> bool:
        known = self._names.get(name)
        if known is None:
            g = self._grounding
            folded = _fold(name)
            # In the folded context only if each of its words is one of the context's words.
            known = all(w in g.words for w in folded.split()) and (
                self._search(folded, g.folded) is not False)
            self._names[name] = known
        return known


_PASSAGES_LOOKED_UP = 64
_SEARCHES = 256  # scans of a context for one response's numbers and names (see _Lookups)


def _drawn_on(passages: Sequence[str], joined: str, prompt: str) -> str:
    """The text a response may draw on: its context's passages and its prompt. A RAG prompt
    often carries its passages verbatim; where every passage stands in the prompt between
    whitespace (or the prompt's ends), the prompt alone holds the same words, numbers and
    names, and is read once instead of the document twice (folding a long document is most of
    this scorer's cost). Only a "name" made of one passage's last words and the next one's
    first, which the joining alone put side by side, is no longer found. Past
    `_PASSAGES_LOOKED_UP` passages they are not looked for: each look scans the prompt, and
    hostile input could hold thousands of passages found only at its end."""
    if (prompt and len(passages) <= _PASSAGES_LOOKED_UP
            and all(_stands_in(passage, prompt) for passage in passages)):
        return prompt
    return joined + "\n" + prompt


def _stands_in(passage: str, text: str) -> bool:
    """Whether `passage` occurs in `text` (first occurrence) with whitespace or an end of
    either on both sides, so that no word, number or possessive runs across its edges."""
    start = text.find(passage)
    if start < 0:
        return False
    end = start + len(passage)
    return ((start == 0 or text[start - 1].isspace() or passage[0].isspace())
            and (end == len(text) or text[end].isspace() or passage[-1].isspace()))


def _is_question(sentence: str) -> bool:
    return sentence.rstrip(_CLOSERS).endswith("?")


# --- NLI ---------------------------------------------------------------------------------------

_ENTAILMENT_LABELS = ("entailment", "entailed", "entails", "supported", "consistent")


class NliSupport:
    """P(premise entails hypothesis) from a local NLI cross-encoder; never downloaded.

    Any sequence-classification NLI model works (HHEM, MiniCheck, MNLI heads) when its config
    names an entailment label; a single-logit head is read as P(supported) through a sigmoid.

    >>> nli = NliSupport("/models/nli-deberta")  # doctest: +SKIP
    >>> nli.entailment(["The tower is 330 m tall."], ["It is 530 m tall."])  # doctest: +SKIP
    array([0.01])
    """

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 64,
                 max_length: int = 512) -> None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ModelNotFound(
                f"{NLI_SETTING}={str(path)!r} is not a directory on disk and driftwatch never "
                "downloads models; point it to a local NLI cross-encoder (save_pretrained) or "
                "leave it unset to judge support with embeddings only")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        quiet_model_loading()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(
                folder, local_files_only=True)
        except (OSError, ValueError) as e:  # no config, weights or tokenizer files there
            raise ModelNotFound(
                f"{NLI_SETTING}={str(path)!r} is not a complete sequence-classification model "
                f"({first_line(e)}); save one there with save_pretrained, or leave it unset") from e
        self.model = model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        limits = [max_length, getattr(self.tokenizer, "model_max_length", max_length),
                  getattr(model.config, "max_position_embeddings", max_length)]
        self.max_length = int(min(limits))
        self.entailment_index = _entailment_index(model.config.num_labels,
                                                  model.config.id2label)
        self._torch = torch

    def entailment(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        """Entailment probability per (premise, hypothesis) pair, float64 in [0, 1]."""
        if len(premises) != len(hypotheses):
            raise ValueError("premises and hypotheses must have the same length")
        torch = self._torch
        out = np.empty(len(premises), dtype=np.float64)
        # Longest first keeps padding low within a batch; rows go back to input order.
        order = np.argsort([-len(p) - len(h) for p, h in zip(premises, hypotheses, strict=True)],
                           kind="stable")
        with inference():
            for at in range(0, len(order), self.batch_size):
                rows = order[at:at + self.batch_size]
                inputs = self.tokenizer(
                    [premises[i] for i in rows], [hypotheses[i] for i in rows], padding=True,
                    truncation=True, max_length=self.max_length, return_tensors="pt")
                logits = self.model(**inputs.to(self.device)).logits.float()
                probs = (torch.sigmoid(logits[:, 0]) if self.entailment_index is None
                         else torch.softmax(logits, dim=-1)[:, self.entailment_index])
                out[rows] = probs.cpu().numpy()
        return out


def _entailment_index(num_labels: int, id2label: dict[int, str]) -> int | None:
    if num_labels == 1:
        return None
    labels = {int(i): str(name).lower() for i, name in id2label.items()}
    for wanted in _ENTAILMENT_LABELS:
        for index, name in labels.items():
            if name == wanted:
                return index
    raise ModelNotFound(
        f"{NLI_SETTING}: the model's labels {sorted(labels.values())} name no entailment class "
        f"(one of {list(_ENTAILMENT_LABELS)}); point it to an NLI model")


# --- Scorer ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroundednessResult:
    """Per-record groundedness scores, unsupported sentences, and novel numbers and names."""

    # 1 - share of unsupported response sentences. NaN when there is nothing to judge (no
    # context, or an empty response): unknown is not the same as ungrounded.
    groundedness: np.ndarray
    unsupported_sentences: np.ndarray  # int64; 0 where there is nothing to judge
    # Figures in the response found nowhere in context or prompt, canonical ("1,000" -> "1000").
    novel_numbers: list[tuple[str, ...]]
    # Capitalised names and quoted strings in the response found nowhere in context or prompt.
    novel_names: list[tuple[str, ...]]


@dataclass(frozen=True)
class _Judged:
    """One record's sentences after the exact and lexical checks, before the model's say."""

    index: int
    sentences: tuple[str, ...]
    context: str
    unsupported: np.ndarray  # bool: decided unsupported by the exact and lexical checks
    undecided: np.ndarray  # bool: left for the embedding (or NLI) to decide
    numbers: tuple[str, ...]
    names: tuple[str, ...]


class GroundednessScorer:
    """Which response sentences the record's own context supports, for a whole batch at once.

    Questions make no claim and count as supported. A claim is unsupported when it carries a
    number or a name found nowhere in the context or prompt. Without NLI, the share of its
    content words found nowhere there then decides: at most `lexical_threshold`, supported;
    above `paraphrase_novelty`, unsupported; in between, the embedding rescues paraphrases (a
    cosine >= `support_threshold` to one of the `candidates` lexically closest context
    sentences). Only those in-between sentences are embedded, in one call for the batch.
    With NLI, the model decides every claim that passes the exact checks (entailment by the
    whole context >= `nli_threshold`) and neither words nor embeddings are consulted.

    Why so little embedding: on HaluEval cosine similarity is at or below chance (hallucinated
    answers are crafted close to the context), and a rescue at cosine 0.8 mostly rescued
    hallucinations; 0.9 keeps only near-restatements. Defaults were tuned on HaluEval lines
    5000-9999; detectors/groundedness_eval.py reports on lines 0-4999.

    >>> scorer = GroundednessScorer(embed)  # doctest: +SKIP
    >>> context = [["The tower is 330 meters tall."]]
    >>> r = scorer.score(["It is 530 meters tall."], context, [None])  # doctest: +SKIP
    >>> r.groundedness, r.novel_numbers  # doctest: +SKIP
    (array([0.]), [('530',)])
    """

    def __init__(
        self,
        embed: Embed,
        support_threshold: float = 0.9,
        nli: NliSupport | None = None,
        nli_threshold: float = 0.5,
        max_sentences: int = 32,
        lexical_threshold: float = 0.15,
        paraphrase_novelty: float = 0.34,
        candidates: int = 1,
    ) -> None:
        if max_sentences < 1 or candidates < 1:
            raise ValueError("max_sentences and candidates must be at least 1")
        self.embed = embed
        self.support_threshold = support_threshold
        self.nli = nli
        self.nli_threshold = nli_threshold
        self.max_sentences = max_sentences
        self.lexical_threshold = lexical_threshold
        self.paraphrase_novelty = paraphrase_novelty
        self.candidates = candidates

    def score(
        self,
        responses: Sequence[str | None],
        contexts: Sequence[Sequence[str] | None],
        prompts: Sequence[str | None],
    ) -> GroundednessResult:
        """Groundedness of each response in its own context; at most one model call per batch."""
        n = len(responses)
        if len(contexts) != n or len(prompts) != n:
            raise ValueError("responses, contexts and prompts must have the same length")
        groundedness = np.full(n, np.nan)
        unsupported = np.zeros(n, dtype=np.int64)
        novel_numbers: list[tuple[str, ...]] = [()] * n
        novel_names: list[tuple[str, ...]] = [()] * n
        judged = [j for i in range(n) if (j := self._judge(i, responses[i], contexts[i],
                                                             prompts[i])) is not None]
        if not judged:
            return GroundednessResult(groundedness, unsupported, novel_numbers, novel_names)
        undecided = np.concatenate([j.undecided for j in judged])
        supported = np.ones(undecided.size, dtype=bool)
        if undecided.any():
            supported[undecided] = (self._entailed(judged) if self.nli is not None
                                    else self._paraphrased(judged))
        at = 0
        for j in judged:
            count = len(j.sentences)
            bad = int(np.count_nonzero(j.unsupported | ~supported[at:at + count]))
            at += count
            groundedness[j.index] = 1.0 - bad / count
            unsupported[j.index] = bad
            novel_numbers[j.index] = j.numbers
            novel_names[j.index] = j.names
        return GroundednessResult(groundedness, unsupported, novel_numbers, novel_names)

    def _judge(self, index: int, response: str | None, context: Sequence[str] | None,
               prompt: str | None) -> _Judged | None:
        passages = [p for p in context or () if p and any(c.isalnum() for c in p)]
        sentences = tuple(split_sentences(response or "")[: self.max_sentences])
        if not passages or not sentences:
            return None
        joined = "\n".join(passages)
        grounding = _grounding(_drawn_on(passages, joined, prompt or ""))
        lookups = _Lookups(grounding, _SEARCHES)
        numbers = [tuple(x for x in _numbers(s) if not lookups.knows_number(x))
                   for s in sentences]
        names = [tuple(x for x in _names(s) if not lookups.knows_name(x)) for s in sentences]
        claims = np.array([not _is_question(s) for s in sentences])
        # Decided here: a claim carrying an invented number or name is unsupported.
        unsupported = claims & np.array([bool(a or b) for a, b in zip(numbers, names, strict=True)])
        if self.nli is None:
            novelty = np.array([grounding.novelty(s) for s in sentences])
            # Past `paraphrase_novelty` a claim is too far from the context's wording to be a
            # paraphrase of it: unsupported without spending an embedding on it.
            unsupported |= claims & (novelty > self.paraphrase_novelty)
            undecided = claims & ~unsupported & (novelty > self.lexical_threshold)
        else:
            undecided = claims & ~unsupported
        return _Judged(index, sentences, joined, unsupported, undecided,
                       tuple(dict.fromkeys(x for found in numbers for x in found)),
                       tuple(dict.fromkeys(x for found in names for x in found)))

    def _paraphrased(self, judged: Sequence[_Judged]) -> np.ndarray:
        """Per undecided sentence (batch order): its best cosine to its context candidates."""
        texts: dict[str, int] = {}  # identical sentences (shared contexts) are embedded once
        left: list[int] = []
        right: list[int] = []
        starts: list[int] = []
        for j in judged:
            if not j.undecided.any():
                continue
            context, bags = _sentence_bags(j.context)
            for sentence in np.asarray(j.sentences, dtype=object)[j.undecided]:
                words = set(_content(sentence))
                overlap = np.fromiter((len(words & b) for b in bags), np.int64, len(bags))
                # Lexical pre-selection keeps long documents from dominating the embed cost.
                picks = np.argsort(-overlap, kind="stable")[: self.candidates]
                starts.append(len(left))
                left.extend([texts.setdefault(sentence, len(texts))] * len(picks))
                right.extend(texts.setdefault(context[k], len(texts)) for k in picks)
        vectors = np.asarray(self.embed(list(texts)), dtype=np.float32)
        cosines = np.einsum("ij,ij->i", vectors[left], vectors[right])
        best = np.maximum.reduceat(cosines, np.asarray(starts, dtype=np.int64))
        return best >= self.support_threshold

    def _entailed(self, judged: Sequence[_Judged]) -> np.ndarray:
        assert self.nli is not None
        pairs = [(j.context, s) for j in judged
                 for s, todo in zip(j.sentences, j.undecided, strict=True) if todo]
        premises, hypotheses = zip(*pairs, strict=True)
        return self.nli.entailment(premises, hypotheses) >= self.nli_threshold
