"""The wire format: one JSON object per Kafka message, decoded straight into a typed Record.

Unknown fields are ignored; every field but request_id is optional so request and
response halves on split topics decode with the same type.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple

import msgspec

from consumers.api_bodies import (
    MAX_FIELD_CHARS,
    MAX_TOKENS,
    ContentPart,
    Passage,
    PromptMessage,
    RequestObject,
    ResponseObject,
    Short,
)

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
# Whole numbers; 1000.0 decodes too (some encoders write every number as a float) and the
# decoder turns it into 1000, or rejects 1000.5; at most MAX_TOKENS.
Count = (Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
         | Annotated[float, msgspec.Meta(ge=0, le=MAX_TOKENS)])
# RFC 3339 requires an offset. One without (Python's `datetime.utcnow().isoformat()`) decodes
# here, and the decoder refuses it, saying how to fix the producer, or reads it as UTC
# (`validation.naive_timestamps`): never in the host's zone.
Rfc3339 = datetime


# A chat's user turns: OpenAI's and Anthropic's role, and LangChain's.
_USER_ROLES = frozenset({"user", "human"})


class Origin(NamedTuple):
    """Where a message came from; offsets travel with the records they produced."""

    topic: str
    partition: int
    offset: int


class Record(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One LLM request/response as it arrives on the wire (validated)."""

    # A whole number is an id too (the decoder writes it as its decimal string, so halves
    # that write it as a number and as a string still join).
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_FIELD_CHARS)] | int
    timestamp: Rfc3339 | float | None = None
    model: Short | None = None
    model_version: Short | None = None
    # Any label: the canary and shadow gates compare the arms their config names (stable,
    # canary and shadow by default; blue and green, prod and candidate as the stack says).
    deployment: Short | None = None
    route: Short | None = None
    # A string or a chat; the request body the API was sent (RequestObject) is read into
    # them by the decoder.
    prompt: str | list[PromptMessage] | RequestObject | None = None
    messages: list[PromptMessage] | None = None
    # A string; the object an API returned (ResponseObject), or a message's content parts,
    # is read as its text by the decoder.
    response: str | list[ContentPart] | ResponseObject | None = None
    # Strings; a passage logged as an object (Passage) is read as its text by the decoder,
    # and one string is one passage.
    context: list[str | Passage] | str | None = None
    latency_ms: NonNegative | None = None
    prompt_tokens: Count | None = None
    completion_tokens: Count | None = None
    cost_usd: NonNegative | None = None
    status: Short | None = None
    error_type: Short | None = None
    # Anthropic's system prompt, beside a chat's messages: a string or text blocks, read
    # before them. Any other value is ignored, as an unknown field is: the name is generic,
    # and another producer's `system` must not dead-letter its records.
    system: Any = None

    @property
    def prompt_text(self) -> str | None:
        """The prompt as plain text; chat messages are joined one per line, after a `system`
        prompt."""
        prompt = self.prompt if self.prompt is not None else self.messages
        if prompt is None or isinstance(prompt, str):
            return prompt
        joined = "\n".join(m.text for m in prompt)
        system = _system_text(self.system)
        return joined if system is None else f"{system}\n{joined}"

    @property
    def user_prompt(self) -> str | None:
        """The prompt the models embed and score: of a chat, the last user message; a string
        prompt as it is. A system prompt and the earlier turns stay out: they are often
        longer than the embedder reads (a text's first 256 or 512 tokens), and a system
        prompt the same on every request would stand in for what each user asked, in the
        prompt's drift and toxicity alike. A user message of tool results alone (Anthropic's
        agent turns) is not what the user asked; a chat without a user message of its own is
        read whole."""
        prompt = self.prompt if self.prompt is not None else self.messages
        if prompt is None or isinstance(prompt, str):
            return prompt
        for m in reversed(prompt):
            if m.speaker in _USER_ROLES and (said := m.said) is not None:
                return said
        return self.prompt_text

    @property
    def prompt_chars(self) -> int | None:
        """Length of prompt_text, without building it."""
        prompt = self.prompt if self.prompt is not None else self.messages
        if prompt is None or isinstance(prompt, str):
            return None if prompt is None else len(prompt)
        system = _system_text(self.system)
        return (sum(len(m.text) for m in prompt) + max(len(prompt) - 1, 0)
                + (0 if system is None else len(system) + 1))

    @property
    def event_time(self) -> float | None:
        """Event time in epoch seconds (the wire carries RFC 3339 or an epoch number, which
        the decoder leaves in milliseconds)."""
        ts = self.timestamp
        if ts is None:
            return None
        if isinstance(ts, datetime):
            return (ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)).timestamp()
        return ts / 1000.0


def _system_text(system: Any) -> str | None:
    """A `system` field's text: a string, or the text of a list of `{type, text}` blocks."""
    if system is None or isinstance(system, str):
        return system
    if isinstance(system, list):
        texts = [b["text"] for b in system
                 if isinstance(b, dict) and isinstance(b.get("text"), str) and b["text"]]
        return "\n".join(texts) if texts else None
    return None


def merge_halves(request: Record, response: Record) -> Record:
    """One record from a request half and its response half; the request wins on conflicts."""
    fill = {
        name: getattr(response, name)
        for name in response.__struct_fields__
        if getattr(request, name) is None and getattr(response, name) is not None
    }
    return msgspec.structs.replace(request, **fill) if fill else request
