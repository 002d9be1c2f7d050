"""app.http: a subscription event's JSON is built once and reused for every subscriber."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.http import GraphQLView, SharedJson


def encode(message: dict[str, Any], shared: SharedJson | None = None) -> str:
    view = GraphQLView.__new__(GraphQLView)  # encode_json needs no server parts
    view._shared_json = shared or SharedJson()
    return view.encode_json(message)


def test_next_messages_of_the_same_data_share_its_json_and_keep_their_own_ids() -> None:
    shared = SharedJson()
    data = {"orderEvents": {"sequence": 7, "type": "CONFIRMED", "note": 'a "quoted" é'}}
    first = encode({"id": "1", "type": "next", "payload": {"data": data}}, shared)
    second = encode({"id": 'op"2', "type": "next", "payload": {"data": data}}, shared)

    assert json.loads(first) == {"id": "1", "type": "next", "payload": {"data": data}}
    assert json.loads(second) == {"id": 'op"2', "type": "next", "payload": {"data": data}}
    assert len(shared._entries) == 1


def test_equal_but_distinct_data_objects_are_serialized_each() -> None:
    shared = SharedJson()
    a = {"orderEvents": {"sequence": 1}}
    b = {"orderEvents": {"sequence": 2}}
    assert json.loads(shared.dumps(a)) == a
    assert json.loads(shared.dumps(b)) == b
    assert json.loads(shared.dumps(a)) == a


def test_shared_json_is_bounded_and_keeps_its_objects_alive() -> None:
    shared = SharedJson(size=3)
    for n in range(10):
        shared.dumps({"n": n})  # each dict would be freed at once if not kept
    assert len(shared._entries) == 3
    assert sorted(value["n"] for value, _ in shared._entries.values()) == [7, 8, 9]


def test_other_messages_are_plain_json() -> None:
    with_errors = {"id": "1", "type": "next", "payload": {"data": None, "errors": [{"m": 1}]}}
    for message in (
        {"type": "connection_ack"},
        {"id": "1", "type": "complete"},
        with_errors,
        {"data": {"x": 1}},
    ):
        assert json.loads(encode(message)) == message


def test_answers_are_compact_json_that_reads_back_as_the_same_data() -> None:
    data = {
        "data": {"order": {"number": "ORD-000001", "note": 'Zoë said "hi" \u2603\n', "n": 3}},
        "extensions": {"cost": {"actualQueryCost": 12}, "ratio": 0.5, "ok": True, "none": None},
    }
    text = encode(data)
    assert json.loads(text) == data
    assert ": " not in text and ", " not in text


def test_what_orjson_refuses_is_encoded_by_the_standard_library() -> None:
    # An integer beyond 64 bits: orjson raises, json encodes it.
    data = {"data": {"big": 2**70, "list": [1, -(2**65)]}}
    assert json.loads(encode(data)) == data
    with pytest.raises(TypeError):  # and what neither can encode still fails loudly
        encode({"data": {"x": object()}})
