"""Smoke test of upstream.py alone, without Warden: starts the scripted upstream and points the
real `openai` and `anthropic` SDKs straight at it (OpenAI base_url = upstream + "/v1",
Anthropic base_url = upstream), to prove that the SDKs parse every scripted answer, streamed
and not: the plain echo, the card and AWS key texts (and that their streams cut the secret
across several deltas), and the tool calls (through the SDKs' own stream accumulators too).
Also checks the record file. Takes no arguments; prints one line per passed check and exits
non-zero on the first failure. Needs the SDKs importable (e.g. PYTHONPATH=.ci/.pydeps)."""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import anthropic
import openai

HERE = os.path.dirname(os.path.abspath(__file__))
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
CARD_TEXT = "Your card is 4111 1111 1111 1111, keep it safe."
AWS_TEXT = "Here is the key: AKIAIOSFODNN7EXAMPLE. Store it somewhere safe."
READ_ARGS = {"path": "/tmp/a.txt"}
DELETE_ARGS = {"path": "/etc/passwd"}

passed = 0


class Failed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise Failed(message)


def ok(message):
    global passed
    passed += 1
    print(f"ok  {message}", flush=True)


def user(text):
    return [{"role": "user", "content": text}]


# --- OpenAI -----------------------------------------------------------------------------------


def openai_stream(client, text, include_usage=True):
    """Streams a chat completion; returns (text deltas, tool calls by index, finish_reason, chunks)."""
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = client.chat.completions.create(model=OPENAI_MODEL, messages=user(text), stream=True, **kwargs)
    deltas, calls, finish, chunks = [], {}, None, []
    for chunk in stream:
        chunks.append(chunk)
        expect(chunk.model == OPENAI_MODEL, f"chunk model {chunk.model!r}")
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if choice.delta.content:
            deltas.append(choice.delta.content)
        for tc in choice.delta.tool_calls or []:
            call = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            if tc.id:
                call["id"] = tc.id
            if tc.function and tc.function.name:
                call["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                call["arguments"] += tc.function.arguments
        if choice.finish_reason:
            finish = choice.finish_reason
    return deltas, calls, finish, chunks


def smoke_openai(client):
    r = client.chat.completions.create(model=OPENAI_MODEL, messages=user("Hello there"))
    expect(r.choices[0].message.content == "echo: Hello there", f"echo: {r.choices[0].message.content!r}")
    expect(r.choices[0].finish_reason == "stop", f"finish_reason {r.choices[0].finish_reason!r}")
    expect(r.model == OPENAI_MODEL and r.id.startswith("chatcmpl-") and r.created > 0, "id/model/created")
    expect(r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, f"usage {r.usage}")
    expect(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, "total_tokens")
    ok("openai: plain echo, non-streamed (id, model, usage)")

    parts = [{"type": "text", "text": "first part"}, {"type": "text", "text": "second part"}]
    r = client.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": parts}])
    expect(r.choices[0].message.content == "echo: first part\nsecond part", repr(r.choices[0].message.content))
    ok("openai: echo of a user message given as text parts")

    deltas, calls, finish, chunks = openai_stream(client, "Hello there streamed")
    expect("".join(deltas) == "echo: Hello there streamed", f"streamed echo {''.join(deltas)!r}")
    expect(len(deltas) >= 3 and finish == "stop" and not calls, f"deltas {deltas}, finish {finish}")
    expect(chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.completion_tokens > 0, "usage chunk")
    expect(all(c.usage is None for c in chunks[:-1]), "usage is null on every chunk but the last")
    ok("openai: plain echo, streamed, with a final usage chunk (include_usage)")

    deltas, calls, finish, chunks = openai_stream(client, "no usage please", include_usage=False)
    expect("".join(deltas) == "echo: no usage please" and all(c.choices for c in chunks), "no usage chunk")
    ok("openai: streamed without include_usage: no usage chunk")

    r = client.chat.completions.create(model=OPENAI_MODEL, messages=user("SCRIPT:card"))
    expect(r.choices[0].message.content == CARD_TEXT, repr(r.choices[0].message.content))
    ok("openai: SCRIPT:card, non-streamed")

    deltas, _, finish, _ = openai_stream(client, "SCRIPT:card")
    expect("".join(deltas) == CARD_TEXT and finish == "stop", f"streamed card {deltas}")
    card_deltas = [d for d in deltas if any(ch.isdigit() for ch in d)]
    expect(len(card_deltas) >= 3, f"the card number is cut across only {len(card_deltas)} deltas: {deltas}")
    ok(f"openai: SCRIPT:card, streamed; the card number is cut across {len(card_deltas)} deltas")

    r = client.chat.completions.create(model=OPENAI_MODEL, messages=user("SCRIPT:aws"))
    expect(r.choices[0].message.content == AWS_TEXT, repr(r.choices[0].message.content))
    deltas, _, _, _ = openai_stream(client, "SCRIPT:aws")
    expect("".join(deltas) == AWS_TEXT and deltas[0] == "Here is the key: ", f"streamed aws {deltas}")
    expect(not any("AKIAIOSFODNN7EXAMPLE" in d for d in deltas), f"the key is not cut: {deltas}")
    ok("openai: SCRIPT:aws, non-streamed and streamed (the key cut across two deltas)")

    parameters = {"type": "object", "properties": {"path": {"type": "string"}}}
    names = ("read_file", "delete_file")
    tools = [{"type": "function", "function": {"name": n, "parameters": parameters}} for n in names]
    r = client.chat.completions.create(model=OPENAI_MODEL, messages=user("SCRIPT:tools"), tools=tools)
    choice = r.choices[0]
    expect(choice.finish_reason == "tool_calls" and choice.message.content is None, f"tools: {choice}")
    got = [(tc.id, tc.type, tc.function.name, json.loads(tc.function.arguments)) for tc in choice.message.tool_calls]
    expected = [("call_1", "function", "read_file", READ_ARGS), ("call_2", "function", "delete_file", DELETE_ARGS)]
    expect(got == expected, f"tool calls {got}")
    ok("openai: SCRIPT:tools, non-streamed: call_1 read_file, call_2 delete_file, finish_reason tool_calls")

    deltas, calls, finish, chunks = openai_stream(client, "SCRIPT:tools")
    got = [(c["id"], c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]
    expect(got == [("call_1", "read_file", READ_ARGS), ("call_2", "delete_file", DELETE_ARGS)], f"streamed {got}")
    expect(finish == "tool_calls" and not deltas, f"finish {finish}, content {deltas}")
    pieces = sum(1 for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    expect(pieces >= 6, f"the arguments are not split across chunks ({pieces} tool_call chunks)")
    ok(f"openai: SCRIPT:tools, streamed: merged by index from {pieces} tool_call chunks")

    # The SDK's own accumulator (chat.completions.stream) must agree.
    with client.chat.completions.stream(model=OPENAI_MODEL, messages=user("SCRIPT:tools"), tools=tools) as stream:
        final = stream.get_final_completion()
    got = [(tc.id, tc.function.name, json.loads(tc.function.arguments)) for tc in final.choices[0].message.tool_calls]
    expect(got == [("call_1", "read_file", READ_ARGS), ("call_2", "delete_file", DELETE_ARGS)], f"accumulated {got}")
    expect(final.choices[0].finish_reason == "tool_calls", "accumulated finish_reason")
    ok("openai: SCRIPT:tools, streamed, through the SDK's chat.completions.stream accumulator")

    r = client.chat.completions.create(model=OPENAI_MODEL, messages=user("SCRIPT:delete-only"))
    got = [(tc.id, tc.function.name, json.loads(tc.function.arguments)) for tc in r.choices[0].message.tool_calls]
    expect(got == [("call_1", "delete_file", DELETE_ARGS)], f"delete-only {got}")
    _, calls, finish, _ = openai_stream(client, "SCRIPT:delete-only")
    expect([c["name"] for c in calls.values()] == ["delete_file"] and finish == "tool_calls", f"streamed {calls}")
    ok("openai: SCRIPT:delete-only, non-streamed and streamed")


# --- Anthropic --------------------------------------------------------------------------------


def anthropic_create(client, text, **kwargs):
    return client.messages.create(model=ANTHROPIC_MODEL, max_tokens=256, messages=user(text), **kwargs)


def smoke_anthropic(client):
    m = anthropic_create(client, "Hello there")
    expect([b.type for b in m.content] == ["text"] and m.content[0].text == "echo: Hello there", f"echo {m.content}")
    expect(m.stop_reason == "end_turn" and m.role == "assistant" and m.model == ANTHROPIC_MODEL, f"message {m}")
    expect(m.id.startswith("msg_") and m.usage.input_tokens > 0 and m.usage.output_tokens > 0, f"usage {m.usage}")
    ok("anthropic: plain echo, non-streamed (id, model, usage)")

    blocks = [{"type": "text", "text": "first block"}, {"type": "text", "text": "second block"}]
    m = client.messages.create(
        model=ANTHROPIC_MODEL, max_tokens=256, system="Be brief.", messages=[{"role": "user", "content": blocks}]
    )
    expect(m.content[0].text == "echo: first block\nsecond block", repr(m.content[0].text))
    ok("anthropic: echo of a user message given as text blocks, with a system prompt")

    with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=256, messages=user("Hello streamed")) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    expect("".join(deltas) == "echo: Hello streamed" and len(deltas) >= 3, f"text_stream {deltas}")
    expect(final.content[0].text == "echo: Hello streamed" and final.stop_reason == "end_turn", f"final {final}")
    expect(final.usage.output_tokens > 1 and final.usage.input_tokens > 0, f"final usage {final.usage}")
    ok("anthropic: plain echo, streamed (text_stream and get_final_message, usage from message_delta)")

    events = list(anthropic_create(client, "Hello raw", stream=True))
    types = [e.type for e in events]
    expected = ["message_start", "content_block_start"] + ["content_block_delta"] * 3
    expected += ["content_block_stop", "message_delta", "message_stop"]
    expect(types == expected, f"raw event order {types}")
    expect(events[-2].delta.stop_reason == "end_turn" and events[-2].usage.output_tokens > 0, "message_delta")
    ok("anthropic: raw stream=True events in the Messages API order (ping skipped by the SDK)")

    m = anthropic_create(client, "SCRIPT:card")
    expect(m.content[0].text == CARD_TEXT, repr(m.content[0].text))
    ok("anthropic: SCRIPT:card, non-streamed")

    with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=256, messages=user("SCRIPT:card")) as stream:
        deltas = list(stream.text_stream)
    expect("".join(deltas) == CARD_TEXT, f"streamed card {deltas}")
    card_deltas = [d for d in deltas if any(ch.isdigit() for ch in d)]
    expect(len(card_deltas) >= 3, f"the card number is cut across only {len(card_deltas)} deltas: {deltas}")
    events = anthropic_create(client, "SCRIPT:card", stream=True)
    raw = [e.delta.text for e in events if e.type == "content_block_delta"]
    expect("".join(raw) == CARD_TEXT, f"raw card {raw}")
    ok(f"anthropic: SCRIPT:card, streamed (text_stream and raw events); cut across {len(card_deltas)} deltas")

    m = anthropic_create(client, "SCRIPT:aws")
    expect(m.content[0].text == AWS_TEXT, repr(m.content[0].text))
    with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=256, messages=user("SCRIPT:aws")) as stream:
        deltas = list(stream.text_stream)
    expect("".join(deltas) == AWS_TEXT and deltas[0] == "Here is the key: ", f"streamed aws {deltas}")
    expect(not any("AKIAIOSFODNN7EXAMPLE" in d for d in deltas), f"the key is not cut: {deltas}")
    ok("anthropic: SCRIPT:aws, non-streamed and streamed (the key cut across two deltas)")

    tools = [
        {"name": n, "description": n, "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}
        for n in ("read_file", "delete_file")
    ]
    expected = [("toolu_1", "read_file", READ_ARGS), ("toolu_2", "delete_file", DELETE_ARGS)]
    m = anthropic_create(client, "SCRIPT:tools", tools=tools)
    got = [(b.id, b.name, b.input) for b in m.content if b.type == "tool_use"]
    expect(got == expected and len(m.content) == 2 and m.stop_reason == "tool_use", f"tools {m}")
    ok("anthropic: SCRIPT:tools, non-streamed: toolu_1 read_file, toolu_2 delete_file, stop_reason tool_use")

    with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=256, messages=user("SCRIPT:tools"), tools=tools) as s:
        final = s.get_final_message()
    got = [(b.id, b.name, b.input) for b in final.content if b.type == "tool_use"]
    expect(got == expected and final.stop_reason == "tool_use", f"streamed tools {final}")
    events = list(anthropic_create(client, "SCRIPT:tools", tools=tools, stream=True))
    partials = [e.delta.partial_json for e in events if e.type == "content_block_delta"]
    expect(len(partials) >= 6 and partials[0] == "", f"input_json_delta pieces {partials}")
    ok(f"anthropic: SCRIPT:tools, streamed: get_final_message from {len(partials)} input_json_delta pieces")

    m = anthropic_create(client, "SCRIPT:delete-only")
    expect([(b.id, b.name, b.input) for b in m.content] == [("toolu_1", "delete_file", DELETE_ARGS)], f"{m}")
    with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=256, messages=user("SCRIPT:delete-only")) as s:
        final = s.get_final_message()
    expect([b.name for b in final.content] == ["delete_file"] and final.stop_reason == "tool_use", f"{final}")
    ok("anthropic: SCRIPT:delete-only, non-streamed and streamed")


# --- the record file and odd requests ---------------------------------------------------------


def smoke_record(base, record_path):
    with open(record_path) as f:
        entries = [json.loads(line) for line in f]
    paths = {e["path"] for e in entries}
    expect(paths == {"/v1/chat/completions", "/v1/messages"}, f"recorded paths {paths}")
    for e in entries:
        expect(isinstance(e["body"], dict) and "messages" in e["body"], f"recorded body {e['body']!r}")
        expect(all(name == name.lower() for name in e["headers"]), f"headers not lowercased: {e['headers']}")
    last = entries[-1]
    expect(last["path"] == "/v1/messages" and "anthropic-version" in last["headers"], f"last entry {last}")
    # anthropic 2.x sends its api_key as `Authorization: Bearer`; older SDKs sent `x-api-key`.
    key_headers = (last["headers"].get("x-api-key"), last["headers"].get("authorization"))
    expect("upstream-key" in key_headers or "Bearer upstream-key" in key_headers, f"Anthropic key: {key_headers}")
    expect(entries[0]["headers"].get("authorization") == "Bearer upstream-key", "the OpenAI key header is recorded")
    ok(f"record file: {len(entries)} requests, each with its path, lowercased headers and JSON body")

    request = urllib.request.Request(base + "/v2/nothing", data=b"{}", method="POST")
    try:
        urllib.request.urlopen(request, timeout=10)
        raise Failed("an unknown path was answered 2xx")
    except urllib.error.HTTPError as err:
        expect(err.code == 404 and "error" in json.loads(err.read()), f"unknown path: {err.code}")
    ok("an unknown path gets a 404 with an error body")


def main():
    with tempfile.TemporaryDirectory(prefix="llm-upstream-smoke-") as tmp:
        port_file, record = os.path.join(tmp, "port"), os.path.join(tmp, "record.jsonl")
        upstream = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "upstream.py"), "--port-file", port_file, "--record", record]
        )
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(port_file):
                expect(upstream.poll() is None, f"upstream.py exited with {upstream.returncode}")
                expect(time.monotonic() < deadline, "upstream.py wrote no port file within 10 s")
                time.sleep(0.05)
            base = f"http://127.0.0.1:{open(port_file).read().strip()}"
            print(f"upstream listening on {base}", flush=True)
            smoke_openai(openai.OpenAI(base_url=base + "/v1", api_key="upstream-key", max_retries=0, timeout=20))
            smoke_anthropic(anthropic.Anthropic(base_url=base, api_key="upstream-key", max_retries=0, timeout=20))
            smoke_record(base, record)
        except Failed as err:
            print(f"FAIL {err}", flush=True)
            print(f"{passed} passed, 1 failed")
            return 1
        finally:
            upstream.terminate()
            upstream.wait(timeout=10)
    print(f"{passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
