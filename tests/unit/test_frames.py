"""What ``worker.amqp.frames`` reads of bytes that are not UTF-8 in a delivery's short strings, and
its install into pamqp, without a broker."""

from __future__ import annotations

import pytest
from pamqp import decode

from worker.amqp import frames


def test_valid_utf8_reads_as_pamqp_reads_it_and_other_bytes_as_lone_surrogates() -> None:
    text = "optimiser.plans.é→✓"
    encoded = text.encode()
    wire = bytes([len(encoded)]) + encoded
    assert frames.short_str(wire) == (len(wire), text)
    assert frames.short_str(b"\x04a\xffb\xfe") == (5, "a\udcffb\udcfe")
    assert frames.shown("a\udcffb") == "a\\xffb"
    assert frames.raw("a\udcffb") == b"a\xffb"
    table = b"\x00\x00\x00\x05" + b"\x02k\xff" + b"t\x01"
    assert frames.field_table(table) == (9, {"k\udcff": True})


def test_install_is_idempotent_and_refuses_a_pamqp_it_does_not_know(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frames.install()  # done by every connect(); again changes nothing
    assert decode.METHODS["shortstr"] is frames.short_str
    assert decode.TABLE_MAPPING[b"F"] is frames.field_table
    monkeypatch.setattr(frames, "_installed", False)
    monkeypatch.setitem(decode.METHODS, "shortstr", lambda value: (0, ""))
    with pytest.raises(frames.FrameAdapterError, match="shortstr"):
        frames.install()
