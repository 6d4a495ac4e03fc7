"""Checks schemathesis runs against log-analyzer beyond its built-in ones (loaded through
SCHEMATHESIS_HOOKS by scripts/fuzz-api.sh)."""

import json

import schemathesis

# POST /ingest takes newline-delimited JSON: text, sent as it is.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
# POST /v1/logs and POST /loki/api/v1/push also take protobuf bodies; the document describes them as
# strings, so the fuzzer sends its strings as the body's bytes (each must get a clear 4xx, never a 5xx).
schemathesis.serializer.alias("application/x-protobuf", "text/plain")

# The one 5xx a healthy server gives on purpose: a caller forced `source=` and that path cannot
# answer this window (README: "503 with the reason if it cannot answer").
FORCED_SOURCE_REFUSALS = {"source_unavailable"}


def _body(response):
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


@schemathesis.check
def error_answers_have_error_and_message(ctx, response, case):
    """Every 4xx and 5xx is JSON `{error, message}` with two non-empty strings."""
    if response.status_code < 400:
        return None
    body = _body(response)
    if not isinstance(body, dict):
        raise AssertionError(f"{response.status_code} without a JSON object body: {response.content[:200]!r}")
    for field in ("error", "message"):
        if not isinstance(body.get(field), str) or not body[field]:
            raise AssertionError(f"{response.status_code} body lacks a non-empty {field!r}: {body}")
    return None


@schemathesis.check
def no_server_error(ctx, response, case):
    """No 5xx, except a forced source's documented refusal (503 source_unavailable with source=)."""
    if response.status_code < 500:
        return None
    body = _body(response) or {}
    forced = bool((case.query or {}).get("source"))
    if response.status_code == 503 and forced and body.get("error") in FORCED_SOURCE_REFUSALS:
        return None
    raise AssertionError(f"server error {response.status_code}: {body or response.content[:200]!r}")
