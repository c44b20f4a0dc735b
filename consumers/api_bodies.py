"""What LLM APIs and their frameworks log, and how each is read as the wire format's plain
fields: chat messages (OpenAI's, Anthropic's, Gemini's, LangChain's, the Responses API's
items), the request body an API was sent, the response body it returned (its text, and what
it says of itself: model, token counts, latency, how it ended, an error), and retrieved
passages as a framework's objects. The decoder reads every one of them into a string, a chat
or a number, so nothing after it sees an API's shapes.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

# Ids, labels, status and error type are short by nature; past this they are garbage, and
# every copy of them (join table, scored topic, events, webhooks) would carry it.
MAX_FIELD_CHARS = 4_096
Short = Annotated[str, msgspec.Meta(max_length=MAX_FIELD_CHARS)]
# A billion tokens is past any model's context by a hundred times: a count beyond is garbage
# (1e308 became a 309-digit integer that overflowed the token sums).
MAX_TOKENS = 1_000_000_000


class ContentPart(msgspec.Struct, frozen=True, gc=False):
    """One part of a chat message's content list, such as a text part."""

    type: str = "text"
    text: str | None = None
    refusal: str | None = None  # OpenAI's refusal part: a model's refusal is its answer
    # Anthropic's tool_result block: what a tool returned (a string or blocks), the facts an
    # agent's answer is grounded on, as an OpenAI `tool` message's content is. A server
    # tool's result may be an object (an error, code's output): it has no text here.
    content: str | list[ContentPart] | dict[str, Any] | None = None

    @property
    def part_text(self) -> str | None:
        content = self.content
        if content is None or isinstance(content, dict):
            return self.text or self.refusal
        return content_text(content) or None


def content_text(content: str | list[ContentPart]) -> str:
    """A content's text: a string as it is, or its parts' texts one per line (a part without
    text, an image or a tool call, adds nothing)."""
    if isinstance(content, str):
        return content
    return "\n".join(t for p in content if (t := p.part_text))


class GeminiPart(msgspec.Struct, frozen=True, gc=False):
    """One part of a Gemini message (`{role, parts}`); a thought summary is not the answer."""

    text: str | None = None
    thought: bool = False


class ChatMessage(msgspec.Struct, frozen=True, gc=False):
    """A chat message: OpenAI's `{role, content}`, content a string or a list of parts;
    LangChain's `{type, content}`, its type the role; Gemini's `{role, parts}`; or an item
    of an OpenAI Responses API input that is no message (a `type` without a role): a tool's
    result (`function_call_output`, its `output` read as text), a call or a reasoning (no
    text)."""

    role: str | None = None
    content: str | list[ContentPart] | None = None
    refusal: str | None = None  # OpenAI: the refusal's text, content null
    type: str | None = None
    output: str | list[ContentPart] | None = None
    parts: list[GeminiPart] | None = None  # Gemini's content, its role `user` or `model`

    @property
    def speaker(self) -> str | None:
        """Who wrote it: its role, or LangChain's type (`human`, `ai`, `tool`)."""
        return self.role if self.role is not None else self.type

    @property
    def text(self) -> str:
        content = self.content
        if content is None:
            if self.parts is not None:
                return "\n".join(p.text for p in self.parts if p.text and not p.thought)
            if self.output is not None:
                return content_text(self.output)
            return self.refusal or ""
        if isinstance(content, str):  # the common case, without a call
            return content
        if self.type == "reasoning":  # a model's earlier reasoning: no fact of the chat's
            return ""
        return content_text(content)

    @property
    def said(self) -> str | None:
        """What the message's author wrote: its text without the tool results it carries
        (Anthropic sends them in `user` messages); None for a message of tool results alone."""
        content = self.content
        if not isinstance(content, list) or not any(p.type == "tool_result" for p in content):
            return self.text
        return "\n".join(t for p in content
                         if p.type != "tool_result" and (t := p.text or p.refusal)) or None


class PromptMessage(ChatMessage, frozen=True, gc=False):
    """A message of a prompt's chat: it needs a role or a type (a response's message is
    read whatever it lacks)."""

    def __post_init__(self) -> None:
        # Checked while decoding, so the error names the message's path, at no loop's cost.
        if self.role is None and self.type is None:
            raise ValueError(SPEAKER_NEEDED)


SPEAKER_NEEDED = ("a chat message needs its `role` (`user`, `assistant`, ...), or a `type`: "
                  "LangChain's (`human`, `ai`) or an OpenAI Responses API item's "
                  "(`function_call_output`)")


class Choice(msgspec.Struct, frozen=True, gc=False):
    """One choice of a chat completion (`message`) or of a legacy completion (`text`)."""

    message: ChatMessage | None = None
    text: str | None = None
    finish_reason: Short | None = None


class ConverseOutput(msgspec.Struct, frozen=True, gc=False):
    """Amazon Bedrock Converse's `output`: the assistant's message."""

    message: ChatMessage | None = None


class Candidate(msgspec.Struct, frozen=True, gc=False):
    """One candidate of a Gemini response (a blocked one has no content)."""

    content: ChatMessage | None = None
    finish_reason: Short | None = msgspec.field(default=None, name="finishReason")


class IncompleteDetails(msgspec.Struct, frozen=True, gc=False):
    """Why a Responses API object is `incomplete` (`max_output_tokens`, `content_filter`)."""

    reason: Short | None = None


class RequestObject(msgspec.Struct, frozen=True, gc=False):
    """A prompt logged as the request body the API was sent, as gateways log it: a chat's
    `messages` (OpenAI, Anthropic, Bedrock Converse), a Responses API `input` (a string or
    items) with its `instructions`, Gemini's `contents` with its system instruction, or a
    completion's `prompt`. The decoder reads it into the record's prompt and system prompt,
    and its `model` into the record's where the record names none."""

    model: Short | None = None
    messages: list[PromptMessage] | None = None
    input: str | list[PromptMessage] | None = None
    contents: str | list[PromptMessage] | None = None
    prompt: str | None = None
    system: Any = None  # Anthropic's and Converse's: a string or text blocks
    instructions: str | None = None
    gemini_system: str | ChatMessage | None = msgspec.field(default=None,
                                                           name="systemInstruction")
    system_instruction: str | ChatMessage | None = None  # Gemini's SDK spells it so

    @property
    def chat(self) -> str | list[ChatMessage] | None:
        for prompt in (self.messages, self.input, self.contents, self.prompt):
            if prompt is not None:
                return prompt
        return None

    @property
    def system_prompt(self) -> Any:
        if self.system is not None:
            return self.system
        if self.instructions is not None:
            return self.instructions
        gemini = self.gemini_system if self.gemini_system is not None \
            else self.system_instruction
        return gemini if gemini is None or isinstance(gemini, str) else gemini.text


class Passage(msgspec.Struct, frozen=True, gc=False):
    """A retrieved passage logged as an object rather than its text: LangChain's Document
    (`page_content`), a `text` (LlamaIndex's node, Cohere's documents), a `content` (Haystack's
    Document; OpenAI's vector store results, as text parts) or LlamaIndex's scored node
    (`node`). Metadata, scores and ids beside it are not read."""

    page_content: str | None = None
    text: str | None = None
    content: str | list[ContentPart] | None = None
    node: Passage | None = None

    @property
    def passage_text(self) -> str | None:
        if self.page_content is not None:
            return self.page_content
        if self.text is not None:
            return self.text
        if self.content is not None:
            return content_text(self.content)
        return None if self.node is None else self.node.passage_text


Tokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]


class Usage(msgspec.Struct, frozen=True, gc=False):
    """Token counts as the APIs report them: OpenAI's chat and completions
    (`prompt_tokens`), Anthropic's and the Responses API's (`input_tokens`; Anthropic's
    leaves out the tokens read from or written to its cache, counted beside it), Bedrock
    Converse's (`inputTokens`, its cache's likewise), Cohere's (within `tokens`)."""

    prompt_tokens: Tokens | None = None
    completion_tokens: Tokens | None = None
    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    cache_read_input_tokens: Tokens = 0
    cache_creation_input_tokens: Tokens = 0
    converse_input: Tokens | None = msgspec.field(default=None, name="inputTokens")
    converse_output: Tokens | None = msgspec.field(default=None, name="outputTokens")
    converse_cache_read: Tokens = msgspec.field(default=0, name="cacheReadInputTokens")
    converse_cache_write: Tokens = msgspec.field(default=0, name="cacheWriteInputTokens")
    tokens: Usage | None = None

    def counts(self) -> tuple[int | None, int | None]:
        """(prompt tokens, completion tokens), each None where not reported."""
        if self.prompt_tokens is not None or self.completion_tokens is not None:
            return self.prompt_tokens, self.completion_tokens
        if self.input_tokens is not None or self.output_tokens is not None:
            cached = self.cache_read_input_tokens + self.cache_creation_input_tokens
            return (None if self.input_tokens is None else self.input_tokens + cached,
                    self.output_tokens)
        if self.converse_input is not None or self.converse_output is not None:
            cached = self.converse_cache_read + self.converse_cache_write
            return (None if self.converse_input is None else self.converse_input + cached,
                    self.converse_output)
        return (None, None) if self.tokens is None else self.tokens.counts()


class GeminiUsage(msgspec.Struct, frozen=True, gc=False):
    """Gemini's `usageMetadata`: its answer's tokens and its thinking's are the completion."""

    prompt: Tokens | None = msgspec.field(default=None, name="promptTokenCount")
    candidates: Tokens | None = msgspec.field(default=None, name="candidatesTokenCount")
    thoughts: Tokens = msgspec.field(default=0, name="thoughtsTokenCount")


class ConverseMetrics(msgspec.Struct, frozen=True, gc=False):
    """Bedrock Converse's `metrics`."""

    latency_ms: Annotated[float, msgspec.Meta(ge=0)] | None = msgspec.field(
        default=None, name="latencyMs")


class ApiError(msgspec.Struct, frozen=True, gc=False):
    """An API's error body: OpenAI's and Anthropic's `type`, Gemini's `status`, a `code`."""

    type: Short | None = None
    status: Short | None = None
    code: Short | int | None = None

    @property
    def kind(self) -> str:
        for kind in (self.type, self.status, self.code):
            if kind is not None and kind != "":
                return str(kind)
        return "api_error"


class ResponseObject(msgspec.Struct, frozen=True, gc=False):
    """A response logged as the object the API returned rather than its text: an assistant
    message (OpenAI's `{role, content}`, Anthropic's content blocks), a chat completion
    (`choices`), a message beside other fields (`message`: Ollama's chat, Cohere), a
    Responses API object or a Bedrock Converse response (`output`), a Gemini response
    (`candidates`), a text-generation server's (`generated_text`) or Ollama's generate
    (`response`). The decoder replaces it by its text (`response_text`), so the rest of the
    daemon only ever sees a string."""

    role: str | None = None
    content: str | list[ContentPart] | msgspec.UnsetType | None = msgspec.UNSET
    refusal: str | None = None
    choices: list[Choice] | msgspec.UnsetType = msgspec.UNSET
    message: ChatMessage | msgspec.UnsetType = msgspec.UNSET
    # A Responses API object's items (its `message`s are the answer) or Converse's output.
    output: list[ChatMessage] | ConverseOutput | msgspec.UnsetType = msgspec.UNSET
    candidates: list[Candidate] | msgspec.UnsetType = msgspec.UNSET
    generated_text: str | msgspec.UnsetType = msgspec.UNSET
    response: str | msgspec.UnsetType = msgspec.UNSET  # Ollama's generate
    done: bool | None = None  # Ollama: False on a stream's chunk, which is not the answer
    # What it says of itself, read into the record where the record says nothing: the model
    # (Gemini's `modelVersion`), token counts, latency (Converse's, Ollama's in ns).
    model: Short | None = None
    gemini_model: Short | None = msgspec.field(default=None, name="modelVersion")
    usage: Usage | None = None
    gemini_usage: GeminiUsage | None = msgspec.field(default=None, name="usageMetadata")
    prompt_eval_count: Tokens | None = None
    eval_count: Tokens | None = None
    metrics: ConverseMetrics | None = None
    total_duration: Annotated[int, msgspec.Meta(ge=0)] | None = None
    # How the generation ended, the record's status where it gives none: Anthropic's,
    # Converse's, Ollama's, Cohere's, the Responses API's (and why it is incomplete), or the
    # first choice's or candidate's.
    stop_reason: Short | None = None
    converse_stop: Short | None = msgspec.field(default=None, name="stopReason")
    done_reason: Short | None = None
    finish_reason: Short | None = None
    status: Short | int | None = None  # a wrapper's HTTP code, too
    incomplete_details: IncompleteDetails | None = None
    # A failed request's body (OpenAI's, Anthropic's, Gemini's; Ollama's a string): no
    # answer, an error of its type.
    error: str | ApiError | None = None

    def facts(self) -> dict[str, Any]:
        """The record's fields this object reports (model, token counts, latency_ms, status,
        error_type), by name; a field it does not report is left out."""
        prompt, completion = None, None
        if self.usage is not None:
            prompt, completion = self.usage.counts()
        elif self.gemini_usage is not None:
            g = self.gemini_usage
            prompt = g.prompt
            completion = None if g.candidates is None else g.candidates + g.thoughts
        elif self.prompt_eval_count is not None or self.eval_count is not None:
            prompt, completion = self.prompt_eval_count, self.eval_count
        latency = None if self.metrics is None else self.metrics.latency_ms
        if latency is None and self.total_duration is not None:
            latency = self.total_duration / 1e6
        found = {"model": self.model if self.model is not None else self.gemini_model,
                 "prompt_tokens": prompt, "completion_tokens": completion,
                 "latency_ms": latency, "status": self._finish()}
        if self.error is not None:
            found["status"] = "error"
            found["error_type"] = ("api_error" if isinstance(self.error, str)
                                   else self.error.kind)
        return {name: value for name, value in found.items() if value is not None}

    def _finish(self) -> str | None:
        if self.incomplete_details is not None and self.incomplete_details.reason is not None:
            return self.incomplete_details.reason
        for reason in (self.stop_reason, self.converse_stop, self.done_reason,
                       self.finish_reason, self.status):
            if reason is not None:
                return str(reason)
        if self.choices:  # UNSET is false too
            return self.choices[0].finish_reason
        return self.candidates[0].finish_reason if self.candidates else None


def response_text(response: ResponseObject | list[ContentPart]) -> str | None:
    """The text of a response object, or None when it is none of the shapes: a message's
    content, the first choice's or candidate's, the messages of a Responses API output (its
    reasoning and tool calls left out), a Converse output's message, or `generated_text`. A
    refusal's text where OpenAI gives one; parts that are not text (images, tool calls) have
    none, so a message of tool calls alone is empty. Content parts alone are a message's
    content."""
    if isinstance(response, list):
        return content_text(response)
    if response.content is not msgspec.UNSET:
        content = response.content
        return (response.refusal or "") if content is None else content_text(content)
    if response.choices is not msgspec.UNSET:
        if not response.choices:
            return None
        first = response.choices[0]
        return first.message.text if first.message is not None else first.text
    if response.message is not msgspec.UNSET:
        return None if response.done is False else response.message.text
    if response.output is not msgspec.UNSET:
        if isinstance(response.output, ConverseOutput):
            message = response.output.message
            return "" if message is None else message.text
        return "\n".join(t for item in response.output
                         if item.type == "message" and (t := item.text))
    if response.candidates is not msgspec.UNSET:
        if not response.candidates:
            return None
        content = response.candidates[0].content
        return "" if content is None else content.text
    if response.generated_text is not msgspec.UNSET:
        return response.generated_text
    if response.response is not msgspec.UNSET:
        return None if response.done is False else response.response
    return None if response.error is None else ""
