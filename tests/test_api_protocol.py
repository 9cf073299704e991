"""Wire types: unknown fields, prompt xor messages; errors as one InvalidInput. (Blank responses are valid.)"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rmserve.api.protocol import ScoreRequest, invalid_input_from_errors, loc_to_param


def _error(payload):
    with pytest.raises(ValidationError) as info:
        ScoreRequest.model_validate(payload)
    return invalid_input_from_errors(info.value.errors())


def test_defaults_and_alias():
    request = ScoreRequest.model_validate({"items": [{"prompt": "p", "response": "r"}]})
    assert request.return_ == ["reward"]
    request = ScoreRequest.model_validate(
        {"items": [{"messages": [{"role": "user", "content": "hi"}], "response": "r"}], "return": ["safety"]}
    )
    assert request.return_ == ["safety"]


@pytest.mark.parametrize(
    "payload, param, code",
    [
        ({"items": [{"prompt": "p", "response": "r", "respones": "x"}]}, "items.0.respones", "unknown_field"),
        ({"items": [{"prompt": "p", "response": 5}]}, "items.0.response", "string_type"),
        ({"items": [{"response": "r"}]}, "items.0", "value_error"),
        (
            {"items": [{"prompt": "p", "messages": [{"role": "user", "content": "c"}], "response": "r"}]},
            "items.0",
            "value_error",
        ),
        (
            {"items": [{"messages": [{"role": "assistant", "content": "c"}], "response": "r"}]},
            "items.0",
            "value_error",
        ),
        ({"items": [{"prompt": "p", "response": "r", "images": [7]}]}, "items.0.images.0", "string_type"),
        (
            {"items": [{"prompt": "p", "response": "r", "images": [{"sha256": "xyz"}]}]},
            "items.0.images.0.sha256",
            "string_pattern_mismatch",
        ),
        ({"items": []}, "items", "too_short"),
        ({"items": [{"prompt": "p", "response": "r"}], "return": ["vibes"]}, "return.0", "literal_error"),
        ({"items": [{"prompt": "p", "response": "r"}], "extra": 1}, "extra", "unknown_field"),
        ({}, "items", "missing"),
    ],
)
def test_errors_name_the_field(payload, param, code):
    error = _error(payload)
    assert error.param == param
    assert error.code == code
    assert error.http_status == 422


def test_loc_to_param_strips_transport_and_union_tags():
    assert loc_to_param(("body", "items", 0, "images", 1, "data")) == "items.0.images.1"
    assert loc_to_param(("header", "x-request-timeout-ms")) == "x-request-timeout-ms"
    assert loc_to_param(("body",)) is None
