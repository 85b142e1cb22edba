"""api/fanout.py `encoded`: a sub-request's body goes as msgpack, or as JSON when it holds what
msgpack cannot carry (a render's `data` read from a JSON body may), and decodes to the same."""

from __future__ import annotations

import json
import math

import msgpack
import pytest

from api.bodies import MSGPACK
from api.fanout import encoded


def test_a_body_goes_as_msgpack() -> None:
    sub = {"template": "{{ user.x }}", "user_ids": ["u1"], "data": {"u1": {"x": [1, "é"]}}}
    data, content_type = encoded(sub)
    assert content_type == MSGPACK and msgpack.unpackb(data, raw=False) == sub


@pytest.mark.parametrize("value", [2**70, -(2**64), "a\ud800b", 10**1000])
def test_what_msgpack_cannot_carry_goes_as_json(value: object) -> None:
    sub = {"user_ids": ["u1"], "data": {"u1": {"x": value}}}
    data, content_type = encoded(sub)
    assert content_type == "application/json"
    assert json.loads(data) == sub
    data.decode("ascii")  # escaped as the sender's JSON held it


def test_json_keeps_a_nan_as_the_sender_sent_it() -> None:
    data, _ = encoded({"data": {"u1": {"x": 2**70, "y": math.nan}}})
    assert math.isnan(json.loads(data)["data"]["u1"]["y"])
