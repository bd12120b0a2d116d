"""Model names that cannot load say what is wrong with them, before transformers or the hub see them."""

from __future__ import annotations

import shutil
from pathlib import Path

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


def _hub_cache(root, repo: str, files_from) -> None:
    """The layout huggingface_hub keeps a downloaded repo in: blobs behind snapshots/<commit>/."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(files_from, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)


def test_a_hub_id_is_found_in_the_local_hugging_face_cache_for_readers_that_need_files(
        tiny_whisper_dir, tmp_path, monkeypatch):
    """eval.backend=ct2 converts the base with CTranslate2's converter, which reads a directory: a hub
    id base is fetched into (here: found in) the Hugging Face cache rather than refused."""
    from huggingface_hub import constants

    from asr_lora.inference.ct2 import convert_ct2, is_ct2_dir
    from asr_lora.model.whisper import local_model_dir

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _hub_cache(tmp_path / "hub", "acme/whisper-test", tiny_whisper_dir)
    local = local_model_dir("acme/whisper-test")
    assert (tmp_path / "hub") in Path(local).parents and (Path(local) / "config.json").is_file()
    assert is_ct2_dir(convert_ct2(local, tmp_path / "ct2", "int8"))
    assert local_model_dir(str(tiny_whisper_dir)) == str(tiny_whisper_dir)
    with pytest.raises(FileNotFoundError, match="acme/not-downloaded: a hub id with no copy in the local Hugging Face"):
        local_model_dir("acme/not-downloaded")
