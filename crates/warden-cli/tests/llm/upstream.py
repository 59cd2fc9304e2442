"""A scripted LLM upstream for the tests of Warden's LLM proxy front door (stdlib only).

It speaks the OpenAI Chat Completions (`POST /v1/chat/completions`) and Anthropic Messages
(`POST /v1/messages`) wire formats the way those providers do, both as one JSON answer and
streamed as server-sent events (`"stream": true`), so that the real `openai` and `anthropic`
SDKs parse its answers. Streams are sent with chunked transfer encoding, one SSE event per
write and a short pause between events, so a proxy in between sees them arrive separately.

What it answers is chosen by the text of the last user message (string content, or the
text parts / text blocks of a list):

  SCRIPT:card         "Your card is 4111 1111 1111 1111, keep it safe." (streamed, the card
                      number is cut across several deltas)
  SCRIPT:aws          "Here is the key: AKIAIOSFODNN7EXAMPLE. Store it somewhere safe." (streamed,
                      the key is cut across two deltas, after a harmless first delta)
  SCRIPT:tools        two tool calls: read_file {"path": "/tmp/a.txt"} and
                      delete_file {"path": "/etc/passwd"}
  SCRIPT:delete-only  the delete_file tool call alone
  anything else       "echo: " + the last user text

Tool call ids are by position: `call_1`, `call_2` (OpenAI), `toolu_1`, `toolu_2` (Anthropic).

Arguments:
  --port-file PATH  listen on 127.0.0.1 on a free port and write that port to PATH (atomically)
                    once listening
  --record PATH     append each request received as one JSON line:
                    {"path": ..., "headers": {lowercased name: value}, "body": <parsed JSON, or
                    the raw text when it is not JSON>}; written before the answer is sent
  --verbose         log each request on stderr
"""

import argparse
import json
import os
import random
import string
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# --- the scripts -----------------------------------------------------------------------------

CARD_CHUNKS = ["Your card is 41", "11 1111 11", "11 1111, keep", " it safe."]
AWS_CHUNKS = ["Here is the key: ", "AKIAIOSF", "ODNN7EXAMPLE", ". Store it somewhere safe."]
READ_FILE = ("read_file", {"path": "/tmp/a.txt"})
DELETE_FILE = ("delete_file", {"path": "/etc/passwd"})

# Pause between two streamed events, so that each one leaves in a packet of its own.
EVENT_PAUSE_SECONDS = 0.01


class Reply:
    """What the scripted model answers: text (as the deltas it streams in), or tool calls."""

    def __init__(self, text_chunks=None, tool_calls=None):
        self.text_chunks = text_chunks or []
        self.tool_calls = tool_calls or []  # [(name, arguments dict)]

    @property
    def text(self):
        return "".join(self.text_chunks)


def words_in_chunks(text):
    """Cuts text the way a model streams it: a word (with the space before it) a delta."""
    chunks, current = [], ""
    for ch in text:
        if ch == " " and current.strip():
            chunks.append(current)
            current = ""
        current += ch
    if current:
        chunks.append(current)
    return chunks or [""]


def script_for(user_text):
    if "SCRIPT:card" in user_text:
        return Reply(text_chunks=CARD_CHUNKS)
    if "SCRIPT:aws" in user_text:
        return Reply(text_chunks=AWS_CHUNKS)
    if "SCRIPT:delete-only" in user_text:
        return Reply(tool_calls=[DELETE_FILE])
    if "SCRIPT:tools" in user_text:
        return Reply(tool_calls=[READ_FILE, DELETE_FILE])
    return Reply(text_chunks=words_in_chunks("echo: " + user_text))


def text_of(content):
    """The text of a message's content: a string, or the text parts/blocks of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        )
    return ""


def last_user_text(messages):
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def count_tokens(text):
    """A rough token count (about four characters a token), enough for realistic usage."""
    return max(1, (len(text) + 3) // 4)


def prompt_tokens(body):
    """Tokens of everything the prompt carries: system prompt, messages, tool definitions."""
    parts = [text_of(body.get("system")) if body.get("system") is not None else ""]
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            parts.append(text_of(message.get("content")))
    if body.get("tools"):
        parts.append(json.dumps(body["tools"]))
    return count_tokens(" ".join(parts)) + 4 * len(body.get("messages") or [])


def compact(value):
    """JSON as the providers write it on the wire: no spaces after separators."""
    return json.dumps(value, separators=(",", ":"))


def arguments_json(arguments):
    """Tool call arguments as the providers write them: compact JSON."""
    return compact(arguments)


def cut(text, size):
    """Cuts text into pieces of `size` characters (a tool call's arguments, streamed)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def completion_tokens(reply):
    if reply.tool_calls:
        return sum(count_tokens(name + arguments_json(args)) + 8 for name, args in reply.tool_calls)
    return count_tokens(reply.text)


def obfuscation():
    """OpenAI pads each streamed chunk with a random-length `obfuscation` string."""
    return "".join(random.choices(string.ascii_letters + string.digits, k=random.randint(1, 16)))


# --- OpenAI Chat Completions ------------------------------------------------------------------

SYSTEM_FINGERPRINT = "fp_w4rd3n0001"


def openai_usage(body, reply):
    prompt, completion = prompt_tokens(body), completion_tokens(reply)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def openai_tool_call(index, name, arguments):
    return {
        "id": f"call_{index + 1}",
        "type": "function",
        "function": {"name": name, "arguments": arguments_json(arguments)},
    }


def openai_completion(body, reply):
    if reply.tool_calls:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [openai_tool_call(i, n, a) for i, (n, a) in enumerate(reply.tool_calls)],
            "refusal": None,
            "annotations": [],
        }
        finish_reason = "tool_calls"
    else:
        message = {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []}
        finish_reason = "stop"
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:29],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": openai_usage(body, reply),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def openai_stream_events(body, reply):
    """The `data:` payloads of a streamed chat completion, ending with `[DONE]`."""
    stream_options = body.get("stream_options") or {}
    include_usage = bool(stream_options.get("include_usage"))
    include_obfuscation = stream_options.get("include_obfuscation", True) is not False
    completion_id = "chatcmpl-" + uuid.uuid4().hex[:29]
    created = int(time.time())

    def chunk(delta, finish_reason=None):
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.get("model"),
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            payload["usage"] = None
        if include_obfuscation:
            payload["obfuscation"] = obfuscation()
        return compact(payload)

    if reply.tool_calls:
        for index, (name, arguments) in enumerate(reply.tool_calls):
            start = {
                "index": index,
                "id": f"call_{index + 1}",
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            if index == 0:
                yield chunk({"role": "assistant", "content": None, "tool_calls": [start], "refusal": None})
            else:
                yield chunk({"tool_calls": [start]})
            for piece in cut(arguments_json(arguments), 6):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, "tool_calls")
    else:
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for piece in reply.text_chunks:
            yield chunk({"content": piece})
        yield chunk({}, "stop")

    if include_usage:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.get("model"),
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [],
            "usage": openai_usage(body, reply),
        }
        if include_obfuscation:
            payload["obfuscation"] = obfuscation()
        yield compact(payload)
    yield "[DONE]"


def openai_error(message, error_type="invalid_request_error", param=None, code=None):
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


# --- Anthropic Messages -----------------------------------------------------------------------


def anthropic_content(reply):
    if reply.tool_calls:
        return [
            {"type": "tool_use", "id": f"toolu_{i + 1}", "name": name, "input": arguments}
            for i, (name, arguments) in enumerate(reply.tool_calls)
        ]
    return [{"type": "text", "text": reply.text}]


def anthropic_stop_reason(reply):
    return "tool_use" if reply.tool_calls else "end_turn"


def anthropic_message(body, reply):
    return {
        "id": "msg_01" + uuid.uuid4().hex[:22],
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": anthropic_content(reply),
        "stop_reason": anthropic_stop_reason(reply),
        "stop_sequence": None,
        "usage": {
            "input_tokens": prompt_tokens(body),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": completion_tokens(reply),
            "service_tier": "standard",
        },
    }


def anthropic_stream_events(body, reply):
    """The (event name, data) pairs of a streamed message, as the Messages API sends them."""
    yield "message_start", {
        "type": "message_start",
        "message": {
            "id": "msg_01" + uuid.uuid4().hex[:22],
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": prompt_tokens(body),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
                "service_tier": "standard",
            },
        },
    }
    if reply.tool_calls:
        for index, (name, arguments) in enumerate(reply.tool_calls):
            yield "content_block_start", {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": f"toolu_{index + 1}", "name": name, "input": {}},
            }
            if index == 0:
                yield "ping", {"type": "ping"}
            # The Messages API opens a tool_use block's input with an empty partial_json.
            for piece in [""] + cut(arguments_json(arguments), 6):
                yield "content_block_delta", {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                }
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
    else:
        yield "content_block_start", {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        yield "ping", {"type": "ping"}
        for piece in reply.text_chunks:
            yield "content_block_delta", {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }
        yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield "message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": anthropic_stop_reason(reply), "stop_sequence": None},
        "usage": {"output_tokens": completion_tokens(reply)},
    }
    yield "message_stop", {"type": "message_stop"}


def anthropic_error(message, error_type="invalid_request_error"):
    return {"type": "error", "error": {"type": error_type, "message": message}}


# --- the HTTP server --------------------------------------------------------------------------


class Recorder:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()

    def record(self, entry):
        if not self.path:
            return
        line = json.dumps(entry) + "\n"
        with self.lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; streams use chunked transfer encoding
    server_version = "scripted-llm-upstream/1"
    recorder = Recorder(None)
    verbose = False

    def log_message(self, format, *args):
        if self.verbose:
            sys.stderr.write("upstream: " + (format % args) + "\n")

    # -- reading the request

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()  # the CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def headers_dict(self):
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = headers[name] + ", " + value if name in headers else value
        return headers

    # -- writing the answer

    def send_json(self, status, payload, extra_headers):
        data = compact(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def send_sse(self, events, extra_headers):
        """Streams SSE text blocks (each ending with a blank line), one HTTP chunk each."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            for event in events:
                data = event.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                time.sleep(EVENT_PAUSE_SECONDS)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # The proxy may hang up mid-stream (a blocking finding); that is not our error.
            self.close_connection = True

    # -- routing

    def do_GET(self):
        self.recorder.record({"path": self.path, "headers": self.headers_dict(), "body": None})
        self.send_json(404, openai_error(f"Unknown request URL: GET {self.path}."), {})

    def do_POST(self):
        raw = self.read_body()
        try:
            body = json.loads(raw) if raw else None
            parsed = True
        except ValueError:
            body, parsed = raw.decode("utf-8", "replace"), False
        self.recorder.record({"path": self.path, "headers": self.headers_dict(), "body": body})

        path = self.path.split("?", 1)[0]
        if path == "/v1/chat/completions":
            self.openai(body if parsed else None)
        elif path == "/v1/messages":
            self.anthropic(body if parsed else None)
        else:
            self.send_json(404, openai_error(f"Unknown request URL: POST {path}."), {})

    def openai(self, body):
        headers = {"x-request-id": "req_" + uuid.uuid4().hex, "openai-version": "2020-10-01"}
        if not isinstance(body, dict):
            problem = "We could not parse the JSON body of your request."
            return self.send_json(400, openai_error(problem), headers)
        for field in ("model", "messages"):
            if field not in body:
                problem = openai_error(
                    f"Missing required parameter: '{field}'.", param=field, code="missing_required_parameter"
                )
                return self.send_json(400, problem, headers)
        reply = script_for(last_user_text(body["messages"]))
        if body.get("stream"):
            self.send_sse((f"data: {data}\n\n" for data in openai_stream_events(body, reply)), headers)
        else:
            self.send_json(200, openai_completion(body, reply), headers)

    def anthropic(self, body):
        headers = {"request-id": "req_01" + uuid.uuid4().hex[:22]}
        if not isinstance(body, dict):
            return self.send_json(400, anthropic_error("The request body is not valid JSON."), headers)
        for field in ("model", "messages", "max_tokens"):
            if field not in body:
                return self.send_json(400, anthropic_error(f"{field}: Field required"), headers)
        reply = script_for(last_user_text(body["messages"]))
        if body.get("stream"):
            events = (
                f"event: {name}\ndata: {compact(data)}\n\n" for name, data in anthropic_stream_events(body, reply)
            )
            self.send_sse(events, headers)
        else:
            self.send_json(200, anthropic_message(body, reply), headers)


def main():
    parser = argparse.ArgumentParser(description="A scripted OpenAI / Anthropic upstream.")
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--record")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()

    Handler.recorder = Recorder(args.record)
    Handler.verbose = args.verbose
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
