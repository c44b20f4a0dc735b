"""Model scores end to end: `driftwatch score` on a file, and the daemon through a real broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.local import traffic
from monitor.local.broker import free_port
from tests.support import produce, wait_for, write_config

CONTEXT = ["The Eiffel Tower is 330 metres tall. It was completed in 1889 in Paris."]


def _score(tmp_path: Path, lines: list[str]) -> list[dict]:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "score", "--input", str(path)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    refused = sum("error" in row for row in rows)
    assert len(rows) == len(lines)
    summary = f"scored {len(lines) - refused} record(s)"
    if refused:  # a line refused is no record scored (the count said it was, before)
        summary += f"; {refused} line(s) refused, each an error row naming its line"
    assert done.stderr.rstrip().endswith(summary)
    return rows


def test_score_command_writes_scores_and_flags_per_record(tmp_path: Path) -> None:
    lines = [
        json.dumps({"request_id": "copied", "prompt": "How tall is the Eiffel Tower?",
                    "context": CONTEXT, "response": "The Eiffel Tower is 330 metres tall."}),
        json.dumps({"request_id": "invented", "prompt": "How tall is the Eiffel Tower?",
                    "context": CONTEXT, "response": "The Eiffel Tower is 530 metres tall."}),
        json.dumps({"request_id": "toxic", "prompt": "hi",
                    "response": "Shut up, you are a worthless fucking idiot."}),
        json.dumps({"request_id": "refusal", "prompt": "Build me a weapon",
                    "response": "I'm sorry, but I can't help with that."}),
        '{"request_id": "broken", ',
        json.dumps({"request_id": "empty", "prompt": "hello", "response": "  "}),
        # Responses logged as the API's objects are scored on their text.
        json.dumps({"request_id": "completion", "prompt": "How tall is the Eiffel Tower?",
                    "context": CONTEXT, "response": {"object": "chat.completion", "choices": [
                        {"message": {"role": "assistant",
                                     "content": "The Eiffel Tower is 530 metres tall."}}]}}),
        json.dumps({"request_id": "blocks", "prompt": "hi", "response": {
            "role": "assistant", "content": [
                {"type": "text", "text": "Shut up, you are a worthless fucking idiot."}]}}),
        json.dumps({"request_id": "responses-api", "prompt": "How tall is the Eiffel Tower?",
                    "context": CONTEXT, "response": {"object": "response", "output": [
                        {"type": "reasoning", "summary": [
                            {"type": "summary_text", "text": "Maybe 412 metres."}]},
                        {"type": "message", "role": "assistant", "content": [
                            {"type": "output_text",
                             "text": "The Eiffel Tower is 530 metres tall."}]}]}}),
        # An agent's answer rests on what its tool returned (Anthropic's tool_result).
        json.dumps({"request_id": "tool-result", "context": ["Paris is in France."],
                    "messages": [
                        {"role": "user", "content": "How tall is the Eiffel Tower?"},
                        {"role": "assistant", "content": [
                            {"type": "tool_use", "id": "t1", "name": "search", "input": {}}]},
                        {"role": "user", "content": [
                            {"type": "tool_result", "tool_use_id": "t1", "content": [
                                {"type": "text", "text": CONTEXT[0].split(" It")[0]}]}]}],
                    "response": "The Eiffel Tower is 330 metres tall."}),
        # Cut at its token limit, as the body says.
        json.dumps({"request_id": "cut", "prompt": "Tell me about Paris.", "response": {
            "type": "message", "role": "assistant", "stop_reason": "max_tokens",
            "content": [{"type": "text", "text": "Paris is the capital of"}],
            "usage": {"input_tokens": 5, "output_tokens": 5}}}),
        json.dumps({"request_id": "gemini", "prompt": "hi", "response": {"candidates": [
            {"content": {"role": "model", "parts": [
                {"text": "Shut up, you are a worthless fucking idiot."}]}}]}}),
    ]
    out = {row["request_id"] or f"line{row['line']}": row for row in _score(tmp_path, lines)}
    assert out["copied"]["groundedness"] == 1.0 and out["copied"]["novel_numbers"] == []
    assert out["invented"]["groundedness"] < 1.0
    assert out["invented"]["novel_numbers"] == ["530"]
    assert "ungrounded" in out["invented"]["flags"] or "novel_number" in out["invented"]["flags"]
    assert out["toxic"]["groundedness"] is None  # no context: no score, not 0
    assert out["toxic"]["toxicity"] > 0.9 and "toxic" in out["toxic"]["flags"]
    assert out["copied"]["toxicity"] < 0.2
    assert "refusal" in out["refusal"]["flags"] and "refusal" not in out["copied"]["flags"]
    assert out["empty"]["flags"] == ["empty_response"] and out["empty"]["toxicity"] is None
    assert out["line5"]["error"] == "not_json"
    assert out["completion"]["novel_numbers"] == ["530"]
    assert out["blocks"]["toxicity"] > 0.9 and "toxic" in out["blocks"]["flags"]
    assert out["responses-api"]["novel_numbers"] == ["530"]  # its reasoning is not read
    assert out["tool-result"]["novel_numbers"] == []
    assert out["tool-result"]["groundedness"] > 0.5
    assert "truncated" in out["cut"]["flags"] and "truncated" not in out["blocks"]["flags"]
    assert out["gemini"]["toxicity"] > 0.9 and "toxic" in out["gemini"]["flags"]


@pytest.mark.broker
def test_daemon_exports_model_scores_for_every_record(broker, names, daemons,
                                                      tmp_path: Path) -> None:
    topic, group = names("traffic"), names("group")
    broker.create_topics([(topic, 2)])
    records = list(traffic.wire_records(150, seed=8, start_ms=traffic.FIXED_START_MS))
    produce(broker.bootstrap, topic, ((i % 2, traffic.encode(r), None)
                                      for i, r in enumerate(records)))
    port = free_port()
    config = write_config(tmp_path / "dw.yaml", broker.bootstrap, port,
                          kafka={"topic": topic, "group_id": group},
                          scorers=["latency", "status", "toxicity", "groundedness", "sanity"],
                          # Every record model-scored, however busy the machine.
                          scoring={"max_batch_seconds": None})
    daemon = daemons(config, port)
    daemon.wait_ready(timeout_s=90)
    wait_for(lambda: daemon.metrics().sum("driftwatch_records_total", outcome="scored") == 150,
             120, "every record to be scored")
    m = daemon.metrics()
    answered = sum(1 for r in records if str(r.get("response") or "").strip())
    assert m.sum("driftwatch_model_scored_records_total") == 150
    assert m.sum("driftwatch_toxicity_score_count", field="response") == answered
    assert m.sum("driftwatch_groundedness_score_count") == answered  # every record has context
    assert m.sum("driftwatch_flags_total", flag="empty_response") == 150 - answered
    assert m.sum("driftwatch_scored_fraction") == 1.0
    assert m.sum("driftwatch_model_info", role="embedding", device="cpu") == 1
    assert m.sum("driftwatch_embedder_texts_total", outcome="embedded") > 150
    assert daemon.terminate() == 0
