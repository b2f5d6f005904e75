"""GET /metrics: Prometheus text whose values move as requests are made."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"


def scrape(server) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("application/openmetrics-text")
        text = resp.read().decode()
    assert text.rstrip().endswith("# EOF")
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values


def metric(values, name, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return values.get(f"{name}{{{want}}}" if want else name, 0.0)


def test_metrics_move_with_requests(server, runtime):
    before = scrape(server)
    out = runtime.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "Hi"}]}],
                           inferenceConfig={"maxTokens": 5})
    with pytest.raises(ClientError):
        runtime.converse(modelId="no.such-model", messages=[{"role": "user", "content": [{"text": "x"}]}])
    after = scrape(server)

    assert metric(after, "basalt_requests_total", operation="Converse") >= \
        metric(before, "basalt_requests_total", operation="Converse") + 2
    assert metric(after, "basalt_errors_total", operation="Converse", code="ValidationException") >= \
        metric(before, "basalt_errors_total", operation="Converse", code="ValidationException") + 1
    usage = out["usage"]
    assert metric(after, "basalt_input_tokens_total", model=CLAUDE) - \
        metric(before, "basalt_input_tokens_total", model=CLAUDE) >= usage["inputTokens"]
    assert metric(after, "basalt_output_tokens_total", model=CLAUDE) - \
        metric(before, "basalt_output_tokens_total", model=CLAUDE) >= usage["outputTokens"]
    assert metric(after, "basalt_time_to_first_token_seconds_count", model=CLAUDE) > \
        metric(before, "basalt_time_to_first_token_seconds_count", model=CLAUDE)
    assert metric(after, "basalt_request_duration_seconds_count", operation="Converse") > \
        metric(before, "basalt_request_duration_seconds_count", operation="Converse")

    # Engine load, read at scrape time.
    assert metric(after, "basalt_kv_cache_cells", model="smollm2") >= 8192
    assert metric(after, "basalt_batch_slots", model="smollm2") == 8
    assert metric(after, "basalt_queue_depth", model="smollm2") >= 0
    assert 0 < metric(after, "basalt_kv_cache_cells_used", model="smollm2") <= \
        metric(after, "basalt_kv_cache_cells", model="smollm2")


def test_metrics_need_no_signature_and_count_refusals(server):
    before = scrape(server)
    req = urllib.request.Request(f"{server.url}/foundation-models")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 403
    after = scrape(server)
    assert metric(after, "basalt_errors_total", operation="ListFoundationModels",
                  code="MissingAuthenticationTokenException") == \
        metric(before, "basalt_errors_total", operation="ListFoundationModels",
               code="MissingAuthenticationTokenException") + 1


def test_guardrail_operations_are_named(server, control):
    control.list_guardrails()
    values = scrape(server)
    assert metric(values, "basalt_requests_total", operation="ListGuardrails") >= 1
    assert not [k for k in values if re.search(r'operation="/guardrails', k)]
