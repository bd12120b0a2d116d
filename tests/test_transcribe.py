"""Transcribe CLI and the multi-adapter Engine it decodes with."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REPO, write_tone
from test_export import make_random_adapter

from asr_lora.inference.engine import Engine
from asr_lora.model.adapters import UnsafeAdapterError, check_adapter_dir
from asr_lora.transcribe import main


def _adapter(tiny_whisper_dir, out, seed):
    return make_random_adapter(tiny_whisper_dir, out, seed=seed, scale=2.0)


def test_adapters_switch_per_call_without_reloading_base(tmp_path, tiny_whisper_dir):
    a = _adapter(tiny_whisper_dir, tmp_path / "a", 1)
    b = _adapter(tiny_whisper_dir, tmp_path / "b", 2)
    # Names peft 0.22 takes for part of its "lora_" key prefix (as "a" is) make it warn of missing keys.
    t = Engine(str(tiny_whisper_dir), adapters={"sg": str(a), "mx": str(b)}, mode="switch")
    with warnings.catch_warnings(record=True) as caught:  # peft calls the first adapter's keys missing
        warnings.simplefilter("always")
        Engine(str(tiny_whisper_dir), adapters={"a": str(a), "b": str(b)}, mode="switch")
    assert not [w for w in caught if "missing adapter keys" in str(w.message)]
    base_weights = t.model.get_base_model().model.encoder.conv1.weight
    x = [np.sin(np.arange(16000) / 16000 * 2 * np.pi * 300).astype("float32") * 0.3]
    outs = {use: t.transcribe(x, use)[0]["text"] for use in ("sg", "mx", "base")}
    assert t.model.get_base_model().model.encoder.conv1.weight is base_weights  # same base object
    # a random tiny model may emit the same garbage text; compare the logits the adapters produce
    feats = t.processor.feature_extractor(x, sampling_rate=16000, return_tensors="pt").input_features
    dec = torch.tensor([[50257, 50362]])
    logits = {}
    for use in ("sg", "mx"):
        t.model.set_adapter(use)
        with torch.no_grad():
            logits[use] = t.model(input_features=feats, decoder_input_ids=dec).logits
    with torch.no_grad(), t.model.disable_adapter():
        logits["base"] = t.model(input_features=feats, decoder_input_ids=dec).logits
    assert not torch.allclose(logits["sg"], logits["mx"]) and not torch.allclose(logits["sg"], logits["base"])
    assert set(outs) == {"sg", "mx", "base"}
    with pytest.raises(KeyError, match="no adapter named 'c'"):
        t.transcribe(x, "c")


def test_pickle_adapter_is_refused(tmp_path, tiny_whisper_dir):
    a = _adapter(tiny_whisper_dir, tmp_path / "a", 1)
    (a / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(UnsafeAdapterError, match="adapter_model.bin"):
        check_adapter_dir(a)


def test_cli_reports_bad_files_and_transcribes_the_rest(tmp_path, tiny_whisper_dir, capsys):
    good = write_tone(tmp_path / "good.wav", 1.0, sr=44100, channels=2)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, dtype="float32"), 16000)
    rc = main([str(good), str(empty), str(tmp_path / "missing.wav"), str(silent), "--model", str(tiny_whisper_dir),
               "--output", "json"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert err.count("error:") == 3
    for name in ("empty.wav", "missing.wav", "silent.wav"):
        assert name in err
    assert '"audio": "' + str(good) in out


def test_cli_output_stays_json_lines_when_a_warning_is_logged(tmp_path, tiny_whisper_dir, capsys):
    # Two exports scored at different beams: the engine warns and decodes with the larger one.
    specs = []
    for name, beam in (("sg", 1), ("mx", 2)):
        adapter = _adapter(tiny_whisper_dir, tmp_path / name / "adapter", seed=beam)
        (tmp_path / name / "export_summary.json").write_text(json.dumps({"beam_size": beam, "wer": {}}))
        specs += ["--adapter", f"{name}={adapter}"]
    clips = [str(write_tone(tmp_path / f"{i}.wav", 1.0, freq=300.0 + 200 * i)) for i in range(2)]
    assert main([*clips, "--model", str(tiny_whisper_dir), *specs, "--output", "json"]) == 0
    out, err = capsys.readouterr()
    assert "scored with different beam sizes [1, 2]" in " ".join(err.split())  # the console wraps lines
    lines = [json.loads(line) for line in out.splitlines()]
    assert [x["audio"] for x in lines] == clips and {x["beam_size"] for x in lines} == {2}


@pytest.mark.slow
def test_cli_bundled_model_transcribes_a_clear_sentence(tmp_path):
    wav = tmp_path / "sample.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", "Please meet me at the train station tomorrow morning.",
                    "-o", str(wav)], check=True)
    out = subprocess.run([sys.executable, "-m", "asr_lora.transcribe", str(wav)], capture_output=True, text=True,
                         cwd=REPO, timeout=300, check=True)
    assert "please meet me at the train station tomorrow morning" in out.stdout.lower().replace(",", "")


@pytest.mark.slow
def test_long_audio_is_transcribed_whole(tmp_path):
    from asr_lora.data.audio import load_audio
    from asr_lora.inference.decode import transcribe_arrays
    from asr_lora.model.whisper import load_whisper

    text = " ".join(f"This is sentence number {w} about the weather in the city." for w in
                    ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                     "twelve"])
    wav = tmp_path / "long.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(wav)], check=True)
    x = load_audio(wav)
    assert len(x) > 30 * 16000
    model, processor = load_whisper("bundled:tiny.en")
    hyp = transcribe_arrays(model, processor, [x])[0].lower()
    assert "sentence number one" in hyp and "number 12 about" in hyp  # both windows decoded


def test_cli_adapter_directory_with_an_equals_sign(tmp_path, tiny_whisper_dir, capsys):
    sweep = _adapter(tiny_whisper_dir, tmp_path / "multirun" / "0_lora.r=4", 1)  # a Hydra sweep folder
    clip = str(write_tone(tmp_path / "a.wav", 1.0))
    for spec in (f"sg={sweep}", str(sweep)):
        assert main([clip, "--model", str(tiny_whisper_dir), "--adapter", spec, "--output", "json"]) == 0, spec
        out, err = capsys.readouterr()
        assert "error" not in err and '"adapter": "' + ("sg" if spec.startswith("sg=") else "adapter0") in out


def test_cli_bad_adapter_or_prompt_is_one_error_line(tmp_path, tiny_whisper_dir, capsys):
    clip = str(write_tone(tmp_path / "a.wav", 1.0))
    base = ["--model", str(tiny_whisper_dir)]
    for args in (["--adapter", f"sg={tmp_path / 'missing'}"], ["--prompt", "call <|endoftext|> now"]):
        assert main([clip, *base, *args]) == 2, args
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("error: --") and len(err.strip().splitlines()) == 1, err


def test_cli_long_prompt_keeps_its_last_tokens(tmp_path, tiny_whisper_dir, capsys):
    clip = str(write_tone(tmp_path / "a.wav", 1.0))
    prompt = " ".join(f"kopi{i}" for i in range(400))  # ~1,200 tokens, past the decoder's 448
    assert main([clip, "--model", str(tiny_whisper_dir), "--prompt", prompt]) == 0
    assert capsys.readouterr().out.strip()


def test_cli_names_the_adapter_model_or_beam_that_cannot_be_used_in_one_line(tmp_path, tiny_whisper_dir, capsys):
    clip = str(write_tone(tmp_path / "a.wav", 1.0))
    sg = _adapter(tiny_whisper_dir, tmp_path / "sg", 1)
    broken = _adapter(tiny_whisper_dir, tmp_path / "broken", 2)
    (broken / "adapter_config.json").write_text('{"r": 8,')
    cut = _adapter(tiny_whisper_dir, tmp_path / "cut", 3)  # a copy interrupted part way
    weights = (cut / "adapter_model.safetensors").read_bytes()
    (cut / "adapter_model.safetensors").write_bytes(weights[:1000])
    other_r = _adapter(tiny_whisper_dir, tmp_path / "other_r", 4)  # weights of r=4 under a config saying r=8
    config = json.loads((other_r / "adapter_config.json").read_text())
    (other_r / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))
    capsys.readouterr()  # building the adapters printed progress
    base = ["--model", str(tiny_whisper_dir)]
    cases = [
        ([*base, "--adapter", f"my.v2={sg}"], "the name 'my.v2' is not one an adapter can have"),
        ([*base, "--adapter", f"base={sg}"], "the name 'base' is not one an adapter can have"),
        ([*base, "--adapter", f"sg={sg}", "--adapter", f"mx={broken}"], f"{broken / 'adapter_config.json'}:1:"),
        ([*base, "--adapter", f"sg={sg}", "--adapter", f"sg={sg}"], "a second adapter named 'sg'"),
        ([*base, "--adapter", f"cut={cut}"], f"{cut}: its weights do not load: Error while deserializing header"),
        ([*base, "--adapter", f"r={other_r}"], f"{other_r}: its weights do not load: size mismatch for "),
        (["--model", str(tmp_path / "no-such-model")], "no such model directory"),
        (["--model", str(sg)], "no config.json; not a transformers Whisper directory"),
    ]
    if not torch.cuda.is_available():
        cases.append(([*base, "--device", "cuda"], "device 'cuda': this machine has no CUDA device"))
    for args, message in cases:
        assert main([clip, *args]) == 2, args
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit):
        main([clip, *base, "--beam-size", "0"])
    assert "--beam-size: 0: must be 1 or more" in capsys.readouterr().err
