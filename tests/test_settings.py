from pathlib import Path

import pytest

from backend.core.settings import SETTINGS, Settings

# That every setting is documented is checked on the built docs site: tests/test_docs.py.


def test_every_setting_has_a_default_and_a_line_of_help():
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)
    for s in SETTINGS:
        assert s.help.strip(), s.env
        assert getattr(Settings(), s.attr) == s.default, s.env


def test_environment_overrides_defaults():
    settings = Settings.from_env({"PORT": "9000", "SEGUE_MODELS": "a, b", "SEGUE_ALLOW_PRIVATE_URLS": "yes",
                                  "SEGUE_RESULT_TTL_DAYS": "0.5"})
    assert settings.port == 9000 and settings.models == ("a", "b") and settings.default_model == "a"
    assert settings.allow_private_urls is True and settings.result_ttl_seconds == 43200


def test_defaults_offer_the_official_models():
    settings = Settings.from_env({})
    assert settings.default_model == "facebook/musicgen-small" and settings.port == 8001
    assert settings.express_port == 3000 and settings.device == "auto" and settings.data_dir == Path("./var")


def test_bad_values_name_the_variable():
    with pytest.raises(ValueError, match="PORT"):
        Settings.from_env({"PORT": "eighty"})


def test_round_trip_through_the_environment():
    settings = Settings.from_env({"SEGUE_MODELS": "x,y", "SEGUE_HALF_PRECISION": "0"})
    assert Settings.from_env(settings.as_env()) == settings


def test_quantize_defaults_to_auto_and_names_its_modes():
    assert Settings.from_env({}).quantize == "auto"
    for text, mode in (("", "auto"), ("AUTO", "auto"), ("off", ""), ("0", ""), ("int8-rows", "int8-rows"),
                       ("int8", "int8"), ("int8-weight-only", "int8-weight-only")):
        assert Settings.from_env({"SEGUE_QUANTIZE": text}).quantize == mode
    with pytest.raises(ValueError, match="SEGUE_QUANTIZE"):
        Settings.from_env({"SEGUE_QUANTIZE": "int4"})
