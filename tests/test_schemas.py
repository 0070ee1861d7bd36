import base64

import pytest

from backend.api.errorhandlers import status_of
from backend.api.schemas import ContinueRequest, GenerateRequest, parse
from backend.core.errors import BadRequest

MODELS = ("m1", "m2")


def parse_generate(body):
    return parse(GenerateRequest, body, MODELS)


def parse_continue(body):
    return parse(ContinueRequest, body, MODELS)


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
    assert status_of(caught.value)[0] == 400


def test_model_not_offered_has_its_own_code():
    with pytest.raises(BadRequest) as caught:
        parse_generate({"url": "https://e.com/a", "model": "other"})
    assert caught.value.code == "model_not_offered"


def test_body_must_be_an_object():
    with pytest.raises(BadRequest):
        parse(GenerateRequest, ["url"], MODELS)


def test_single_number_duration_means_exact_range():
    assert parse_generate({"url": "https://e.com/a", "duration": "12"})["duration"] == (12.0, 12.0)


def test_continue_decodes_base64_and_data_urls():
    raw = b"RIFF....WAVEfmt "
    encoded = base64.b64encode(raw).decode()
    assert parse_continue({"audio": encoded})["audio"] == raw
    assert parse_continue({"audio": "data:audio/wav;base64," + encoded})["audio"] == raw
    assert parse_continue({"audio": encoded, "prompt_duration": "6"})["prompt_duration"] == 6.0


@pytest.mark.parametrize("audio", ["", "!!!not base64!!!", 12, None])
def test_continue_rejects_missing_or_invalid_audio(audio):
    with pytest.raises(BadRequest):
        parse_continue({"audio": audio})


def test_continue_prompt_must_leave_room_in_the_window():
    with pytest.raises(BadRequest) as caught:
        parse_continue({"audio": "UklGRg==", "prompt_duration": 30})
    assert "prompt_duration" in caught.value.message and caught.value.code == "invalid_field"


def test_continue_duration_bounds_the_window():
    values = parse_continue({"audio": "UklGRg==", "prompt_duration": "2", "duration": "3"})
    assert values["duration"] == 3.0
    with pytest.raises(BadRequest):
        parse_continue({"audio": "UklGRg==", "prompt_duration": 6, "duration": 5})


# -- what the pydantic models reproduce of the hand-written parser ---------------------------

@pytest.mark.parametrize("blank", [None, ""])
def test_null_or_empty_means_the_default_except_for_text(blank):
    values = parse_generate({"url": "https://e.com/a", "promptLength": blank, "duration": blank, "seed": blank,
                             "melody": blank, "output_format": blank, "model": blank, "prompt": blank})
    assert values["promptLength"] == 6.0 and values["duration"] == (16.0, 18.0) and values["seed"] is None
    assert values["melody"] is False and values["output_format"] == "wav" and values["model"] is None
    assert values["prompt"] == blank  # "" is a text like any other; null is the default (None)


@pytest.mark.parametrize("body, code", [
    ({"url": None}, "missing_field"),
    ({"url": "  "}, "missing_field"),
    ({"url": "ftp://e.com/a"}, "url_refused"),
    ({"url": "https://e.com/a", "model": "m3"}, "model_not_offered"),
    ({"url": "https://e.com/a", "seed": 10**400}, "invalid_field"),
    ({"url": "https://e.com/a", "top_k": "1.5"}, "invalid_field"),
    ({"url": "https://e.com/a", "melody": "yes"}, "invalid_field"),
])
def test_refusals_keep_their_codes(body, code):
    with pytest.raises(BadRequest) as caught:
        parse_generate(body)
    assert caught.value.code == code and status_of(caught.value)[0] == 400


def test_the_first_field_in_request_order_is_reported():
    # url is declared before the shared fields: it is the one named, as before the models.
    with pytest.raises(BadRequest) as caught:
        parse_generate({"url": "ftp://e.com/a", "model": "m3", "seed": -1})
    assert caught.value.code == "url_refused" and "'url'" in caught.value.message


def test_numbers_booleans_and_unknown_fields():
    values = parse_generate({"url": "https://e.com/a", "seed": "7", "top_k": 40.0, "melody": "1", "whatever": [1]})
    assert values["seed"] == 7 and isinstance(values["seed"], int) and values["top_k"] == 40
    assert values["melody"] is True and "whatever" not in values
    assert parse_generate({"url": "https://e.com/a", "melody": "false"})["melody"] is False


def test_base64_variants_decode_alike():
    raw = bytes(range(250, 256)) * 3
    standard = base64.b64encode(raw).decode()
    for text in (standard, standard.rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("="),
                 "data:audio/mpeg;base64," + standard):
        assert parse_continue({"audio": text})["audio"] == raw
    with pytest.raises(BadRequest) as caught:
        parse_continue({"audio": "abc$"})
    assert caught.value.code == "invalid_base64"


def test_models_round_trip_through_json():
    body = {"url": "https://e.com/a", "currentTime": "1.5", "duration": "10-12", "seed": 3, "model": "m2"}
    model = GenerateRequest.model_validate(body, context={"models": MODELS})
    sent = model.model_dump(mode="json", exclude_unset=True)
    assert sent == {"url": "https://e.com/a", "currentTime": 1.5, "duration": "10-12", "seed": 3, "model": "m2"}
    assert parse_generate(sent) == parse_generate(body)
    clip = parse_continue({"audio": "UklGRg", "prompt_duration": 2, "duration": 3})
    again = ContinueRequest.model_validate(clip).model_dump(mode="json")
    assert again["audio"] == "UklGRg==" and parse_continue(again) == clip


def test_without_the_servers_models_any_model_id_passes():
    # The Python client validates without knowing what the server offers; the server decides.
    assert GenerateRequest.model_validate({"url": "https://e.com/a", "model": "x/y"}).model == "x/y"
