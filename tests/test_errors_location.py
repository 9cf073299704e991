"""Error locations are structured (tuples), so moving an error keeps its param and message true."""

from __future__ import annotations

from rmserve.api.protocol import ScoreRequest, invalid_input_from_errors
from rmserve.api.scoring import Job, _relocate, under
from rmserve.errors import InvalidInput, Overloaded, parse_param
from rmserve.server.rpc.status import status_details


def _validation_error(body: dict) -> InvalidInput:
    try:
        ScoreRequest.model_validate(body)
    except Exception as exc:  # pydantic.ValidationError
        return invalid_input_from_errors(exc.errors())
    raise AssertionError("the body validated")


def test_params_parse_to_locations_and_back():
    assert parse_param("items.3.images.0") == ("items", 3, "images", 0)
    error = InvalidInput("bad", param=("items", 3, "images", 0))
    assert error.param == "items.3.images.0" and error.loc == ("items", 3, "images", 0)
    assert InvalidInput("bad").param is None


def test_an_engine_item_error_is_relocated_by_its_job_without_parsing():
    engine_error = InvalidInput("too long", code="too_long").for_item(1)  # what the engine raises
    assert engine_error.param == "items.1"
    jobs = [Job(response="a", where=under("items", 7)), Job(response="b", where=lambda loc: ("response_b", *loc))]
    moved = _relocate(engine_error, jobs)
    assert (moved.param, moved.item, moved.code, moved.message) == ("response_b", None, "too_long", "too long")
    assert engine_error.param == "items.1"  # the original is untouched


def test_within_strips_a_prefix_from_param_and_message():
    error = _validation_error({"items": [{"prompt": "p", "response": 5}]})
    assert error.param == "items.0.response" and error.message.startswith("items.0.response: ")
    line = error.within(("items", 0))
    assert line.param == "response" and line.message.startswith("response: ")
    assert "items.0" not in line.message
    whole = InvalidInput("x", param="items.0").within(("items", 0))
    assert whole.param is None and whole.message == "x"
    other = InvalidInput("x", param="return")
    assert other.within(("items", 0)) is other


def test_unknown_field_message_follows_the_location():
    error = _validation_error({"items": [{"prompt": "p", "response": "r", "respones": "typo"}]})
    assert (error.param, error.message) == ("items.0.respones", "unknown field 'items.0.respones'")
    assert error.within(("items", 0)).message == "unknown field 'respones'"


def test_grpc_details_lead_with_the_field_once():
    led = _validation_error({"items": [{"prompt": "p", "response": 5}]})
    assert status_details(led) == led.message  # already starts with items.0.response
    plain = InvalidInput("image is empty", param="items.0.images.0")
    assert status_details(plain) == "items.0.images.0: image is empty"


def test_copies_keep_subclass_fields():
    error = Overloaded("queue full", retry_after_s=3.0, code="queue_full").for_item(2)
    assert isinstance(error, Overloaded) and error.retry_after_s == 3.0 and error.param == "items.2"
