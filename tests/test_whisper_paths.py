"""Model names that cannot load say what is wrong with them, before transformers or the hub see them."""

from __future__ import annotations

import shutil

import pytest

from asr_lora.model.whisper import resolve_model_dir


def test_a_ctranslate2_directory_passed_as_a_path_suggests_ct2(tmp_path):
    ct2 = tmp_path / "ct2-int8"
    ct2.mkdir()
    for name in ("model.bin", "config.json"):  # a CTranslate2 export has a config.json of its own
        (ct2 / name).write_text("{}")
    with pytest.raises(FileNotFoundError, match=rf"CTranslate2 model \(model.bin\).*pass ct2:{ct2}"):
        resolve_model_dir(str(ct2))


def test_a_transformers_directory_given_as_ct2_says_to_drop_the_prefix(tiny_whisper_dir, tmp_path):
    hf = shutil.copytree(tiny_whisper_dir, tmp_path / "hf")
    with pytest.raises(FileNotFoundError, match=rf"no model.bin.*pass {hf} without ct2:"):
        resolve_model_dir(f"ct2:{hf}")


@pytest.mark.parametrize("name", ["outputs/typo/export/hf", "./typo", "~/no-such-whisper", "/no/such/whisper"])
def test_a_mistyped_local_path_says_it_does_not_exist(name):
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        resolve_model_dir(name)


def test_hub_ids_and_existing_directories_pass(tiny_whisper_dir):
    assert resolve_model_dir("openai/whisper-small") == "openai/whisper-small"
    assert resolve_model_dir(str(tiny_whisper_dir)) == str(tiny_whisper_dir)
