"""The API under Schemathesis: every operation of /api/openapi.json, all checks, against the real app in process.

Each operation gets a bounded number of generated requests, valid and invalid, so the suite stays fast; every
answer must be documented, match its schema, never be a 5xx and come within 2 s on the test store.
"""
from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from webui import create_app
from webui.openapi import document

EXAMPLES = 25          # generated requests per operation and generation mode
SLOWEST = 2.0          # seconds any one request may take on the test store
OPERATIONS = [(method.upper(), path) for path, item in document()["paths"].items() for method in item]
# Operations that take input, for which requests that break the document can be generated.
WITH_INPUT = [op for op in OPERATIONS
              if document()["paths"][op[1]][op[0].lower()].get("parameters")
              or document()["paths"][op[1]][op[0].lower()].get("requestBody")]
CASES = ([(*op, GenerationMode.POSITIVE) for op in OPERATIONS] + [(*op, GenerationMode.NEGATIVE) for op in WITH_INPUT])

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def fuzzed(tiny_store_dir, tmp_path_factory):
    """(schema loaded from the app's /api/openapi.json, upload directory) over the app with its defaults."""
    uploads = tmp_path_factory.mktemp("fuzz_uploads")
    # A small upload limit, so that generated bodies can cross it.
    app = create_app(tiny_store_dir, config={"UPLOAD_DIR": str(uploads), "MAX_UPLOAD_BYTES": 64 * 1024})
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app), uploads


@pytest.mark.parametrize("method, path, mode", CASES)
def test_every_operation_conforms(fuzzed, method, path, mode):
    schema, uploads = fuzzed
    operation = schema[path][method]
    # No schema can say "a decodable video": generated file bytes are rightly refused with the documented 415.
    excluded = [positive_data_acceptance] if path == "/api/search/video" else []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        response, took = _timed(case)
        case.validate_response(response, excluded_checks=excluded)
        if took >= SLOWEST:
            # The first use of a lazily loaded part (the dictionary, a decoder process) or a burst of load from
            # other processes can cost once; the bound is on the request, so the same request again must meet it.
            _, took = _timed(case)
        assert took < SLOWEST, f"{case.method} {case.formatted_path} {case.query} took {took:.2f} s"
        assert not any(uploads.iterdir()), "an upload was left behind"

    check()


def _timed(case):
    started = time.perf_counter()
    response = case.call()
    return response, time.perf_counter() - started


def test_the_document_lists_every_api_route(fuzzed):
    schema, _ = fuzzed
    app = schema.app
    routes = {(m, _openapi_path(r.rule)) for r in app.url_map.iter_rules() for m in r.methods - {"HEAD", "OPTIONS"}
              if r.rule.startswith(("/api", "/media", "/thumbs"))}
    assert routes == set(OPERATIONS)


def _openapi_path(rule: str) -> str:
    import re
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)
