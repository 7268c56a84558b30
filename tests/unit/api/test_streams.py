"""Bounds on output streams: per user and in total, and each stream gives its slot back."""

from __future__ import annotations

import pytest

from jobworker.api.errors import TooManyStreams
from jobworker.api.streams import StreamSlots


def test_a_user_past_their_limit_is_refused_and_others_are_not():
    slots = StreamSlots(total=10, per_user=2)
    with slots.hold("bob"), slots.hold("bob"):
        with (
            pytest.raises(TooManyStreams, match="bob already has 2 output streams open"),
            slots.hold("bob"),
        ):
            pass
        with slots.hold("carol"):
            assert slots.open_streams() == 3
            assert slots.open_streams("bob") == 2
    assert slots.open_streams() == 0


def test_everyone_together_past_the_total_is_refused():
    slots = StreamSlots(total=2, per_user=5)
    with (
        slots.hold("bob"),
        slots.hold("carol"),
        pytest.raises(TooManyStreams, match="the server already has 2 output streams open"),
        slots.hold("dave"),
    ):
        pass
    with slots.hold("dave"):
        assert slots.open_streams("dave") == 1


def test_a_stream_that_fails_gives_its_slot_back():
    slots = StreamSlots(total=1, per_user=1)
    with pytest.raises(RuntimeError), slots.hold("bob"):
        raise RuntimeError("the stream broke")
    with slots.hold("bob"):
        pass
