import base64

import pytest

from backend.errors import BadRequest
from backend.schemas import CONTINUE, GENERATE, check_continue, check_generate

MODELS = {"model": ("m1", "m2")}


def parse_generate(body):
    values = GENERATE.parse(body, choices=MODELS)
    check_generate(values)
    return values


def test_generate_defaults_and_numeric_strings():
    values = parse_generate({"url": "https://example.com/a.mp3", "promptLength": "6", "currentTime": "42.5"})
    assert values["promptLength"] == 6.0
    assert values["currentTime"] == 42.5
    assert values["duration"] == (16.0, 18.0)
    assert values["model"] is None and values["top_k"] == 250 and values["cfg_coef"] == 3.0
    assert values["output_format"] == "wav"


def test_generate_normalises_youtube_links():
    values = parse_generate({"url": "https://youtu.be/dQw4w9WgXcQ?t=42"})
    assert values["url"] == "https://www.youtube.com/watch?v=dQw4w9WgXcQ"


@pytest.mark.parametrize("body, fragment", [
    ({}, "'url' is required"),
    ({"url": "ftp://example.com/a.mp3"}, "url"),
    ({"url": "not a url"}, "url"),
    ({"url": "https://e.com/a", "currentTime": -1}, "currentTime"),
    ({"url": "https://e.com/a", "currentTime": "abc"}, "currentTime"),
    ({"url": "https://e.com/a", "currentTime": True}, "currentTime"),
    ({"url": "https://e.com/a", "currentTime": "nan"}, "currentTime"),
    ({"url": "https://e.com/a", "duration": "18-16"}, "reversed"),
    ({"url": "https://e.com/a", "duration": "0-10"}, "duration"),
    ({"url": "https://e.com/a", "duration": "10-121"}, "duration"),  # past the 120 s limit
    ({"url": "https://e.com/a", "duration": "ten"}, "duration"),
    ({"url": "https://e.com/a", "duration": "4-5"}, "promptLength"),
    ({"url": "https://e.com/a", "promptLength": 0}, "promptLength"),
    ({"url": "https://e.com/a", "promptLength": 31}, "promptLength"),
    ({"url": "https://e.com/a", "model": "nope"}, "model"),
    ({"url": "https://e.com/a", "prompt": "x" * 501}, "prompt"),
    ({"url": "https://e.com/a", "seed": 1.5}, "seed"),
    ({"url": "https://e.com/a", "seed": -3}, "seed"),
    ({"url": "https://e.com/a", "top_p": 2}, "top_p"),
    ({"url": "https://e.com/a", "output_format": "ogg"}, "output_format"),
    ({"url": "https://e.com/a", "webhook": "file:///etc/passwd"}, "webhook"),
])
def test_generate_rejects_bad_fields(body, fragment):
    with pytest.raises(BadRequest) as caught:
        parse_generate(body)
    assert fragment in caught.value.message
    assert caught.value.status == 400


def test_model_not_offered_has_its_own_code():
    with pytest.raises(BadRequest) as caught:
        parse_generate({"url": "https://e.com/a", "model": "other"})
    assert caught.value.code == "model_not_offered"


def test_body_must_be_an_object():
    with pytest.raises(BadRequest):
        GENERATE.parse(["url"])


def test_single_number_duration_means_exact_range():
    assert parse_generate({"url": "https://e.com/a", "duration": "12"})["duration"] == (12.0, 12.0)


def test_continue_decodes_base64_and_data_urls():
    raw = b"RIFF....WAVEfmt "
    encoded = base64.b64encode(raw).decode()
    assert CONTINUE.parse({"audio": encoded}, choices=MODELS)["audio"] == raw
    assert CONTINUE.parse({"audio": "data:audio/wav;base64," + encoded}, choices=MODELS)["audio"] == raw
    assert CONTINUE.parse({"audio": encoded, "prompt_duration": "6"}, choices=MODELS)["prompt_duration"] == 6.0


@pytest.mark.parametrize("audio", ["", "!!!not base64!!!", 12, None])
def test_continue_rejects_missing_or_invalid_audio(audio):
    with pytest.raises(BadRequest):
        CONTINUE.parse({"audio": audio}, choices=MODELS)


def test_continue_prompt_must_leave_room_in_the_window():
    values = CONTINUE.parse({"audio": "UklGRg==", "prompt_duration": 30}, choices=MODELS)
    with pytest.raises(BadRequest):
        check_continue(values)


def test_continue_duration_bounds_the_window():
    values = CONTINUE.parse({"audio": "UklGRg==", "prompt_duration": "2", "duration": "3"}, choices=MODELS)
    check_continue(values)
    assert values["duration"] == 3.0
    with pytest.raises(BadRequest):
        check_continue(CONTINUE.parse({"audio": "UklGRg==", "prompt_duration": 6, "duration": 5}, choices=MODELS))
