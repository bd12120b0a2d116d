"""Requests that must not end in a 500 or stall the server: over-long or special-token prompts,
unknown languages on a multilingual base, cancelled requests in a batch; and what `verbose_json`
gives the `openai` client (the language's name, `avg_logprob`). A tiny random-init Whisper decodes
them, through FastAPI's TestClient."""

from __future__ import annotations

import io
import logging
import math
import sys
import time
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
import openai
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient

from asr_lora.inference.decode import DecodeOptions, _avg_logprob, _segment, prompt_ids
from asr_lora.inference.engine import Engine
from asr_lora.serving.app import ServerThread, Settings, create_app
from asr_lora.serving.batcher import Batcher

sys.path.insert(0, str(__import__("conftest").REPO / "bench"))
import common  # noqa: E402

LONG_PROMPT = " ".join(f"kopi{i}" for i in range(400))  # ~1,200 tokens, far past the decoder's 448


def _clip(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.2 * np.sin(2 * np.pi * 440 * t) + 0.02 * np.random.default_rng(0).standard_normal(len(t))).astype(
        np.float32)


def _wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, _clip(), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def adapter(tiny_whisper_dir, tmp_path_factory):
    ad = common.random_adapter(str(tiny_whisper_dir), tmp_path_factory.mktemp("faults") / "sg", seed=1, b_std=0.5)
    (ad / "prompt.txt").write_text(LONG_PROMPT + "\n", encoding="utf-8")  # an export's default prompt
    return ad


@pytest.fixture
def serve(tiny_whisper_dir, adapter):
    """A TestClient on a fresh engine: `serve(max_new_tokens=..., multilingual=...)`."""
    batchers = []

    def make(max_new_tokens: int = 8, multilingual: bool = False, **settings):
        engine = Engine(str(tiny_whisper_dir), {"sg": adapter}, max_new_tokens=max_new_tokens)
        if multilingual:  # the same code path as a multilingual checkpoint, on the tiny model
            engine.model.generation_config.is_multilingual = True
            engine.model.generation_config.lang_to_id = {"<|en|>": 50259}
            engine.model.generation_config.task_to_id = {"translate": 50358, "transcribe": 50359}
            engine.multilingual = True
        batchers.append(Batcher(engine, max_batch=4, window_ms=5))
        return TestClient(create_app(batchers[-1], Settings(**settings)), raise_server_exceptions=False), engine

    yield make
    for b in batchers:
        b.close()


def _post(client, **data):
    return client.post("/v1/audio/transcriptions", files={"file": ("a.wav", _wav())}, data=data)


def test_long_prompt_keeps_its_last_tokens_and_logs_the_cut_once(serve, caplog):
    client, engine = serve(max_new_tokens=300)
    full = [int(i) for i in engine.processor.get_prompt_ids(LONG_PROMPT)]
    # Whisper's window: the last 223 text tokens after <|startofprev|>, less where max_new_tokens needs the room
    assert prompt_ids(engine.model, engine.processor, LONG_PROMPT, 128) == (full[0], *full[-223:])
    assert prompt_ids(engine.model, engine.processor, LONG_PROMPT, 300) == (full[0], *full[-143:])
    short = tuple(int(i) for i in engine.processor.get_prompt_ids("kopi, chope"))
    assert prompt_ids(engine.model, engine.processor, "kopi, chope", 128) == short
    with caplog.at_level(logging.DEBUG, logger="asr_lora"):
        r = _post(client, model="sg", prompt=LONG_PROMPT)
    assert r.status_code == 200, r.text
    assert sum("prompt" in m and "cut" in m for m in caplog.messages) == 1, caplog.messages


def test_adapters_default_prompt_goes_through_the_same_cut(serve):
    client, _ = serve(max_new_tokens=128, adapter_prompts=True)
    r = _post(client, model="sg")  # no prompt field: prompt.txt, ~1,200 tokens
    assert r.status_code == 200, r.text


def test_prompt_with_a_special_token_is_a_400_that_never_reaches_the_batcher(serve):
    client, engine = serve()
    r = _post(client, model="sg", prompt="call <|endoftext|> now")
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"], err["type"]) == ("prompt", "invalid_value", "invalid_request_error")
    assert "<|endoftext|>" in err["message"] and engine.batches == []
    assert _post(client, model="sg").status_code == 200


def test_language_on_a_multilingual_base_must_be_one_it_knows(serve):
    client, _ = serve(multilingual=True)
    for lang in ("xx", "klingon", "fr"):  # unknown code, unknown name, known but not in this model
        r = _post(client, model="sg", language=lang)
        assert r.status_code == 400, (lang, r.text)
        assert (r.json()["error"]["param"], r.json()["error"]["code"]) == ("language", "unsupported_value")
    for lang in ("en", "English"):
        assert _post(client, model="sg", language=lang).status_code == 200, lang


@pytest.mark.parametrize("multilingual", [False, True])
def test_verbose_json_echoes_the_language_as_openai_does(serve, multilingual):
    client, _ = serve(multilingual=multilingual)
    for data in ({}, {"language": "en"}, {"language": "English"}):
        r = _post(client, model="sg", response_format="verbose_json", **data)
        assert r.status_code == 200 and r.json()["language"] == "english", (data, r.text)


def test_cancelled_or_settled_futures_never_stop_the_batcher(tiny_whisper_dir, adapter):
    engine = Engine(str(tiny_whisper_dir), {"sg": adapter}, max_new_tokens=4)
    batcher = Batcher(engine, max_batch=4, window_ms=300)
    try:
        cancelled, settled, live = (batcher.submit(_clip(), m) for m in ("sg", "base", "sg"))
        assert cancelled.cancel()  # what asyncio.wrap_future does when the client goes away
        settled.set_result("someone else's")  # a future finished elsewhere: delivery must not raise
        assert live.result(timeout=60)["text"]
        assert settled.result() == "someone else's"
        time.sleep(0.1)
        assert batcher.submit(_clip(), "base").result(timeout=60)["duration"] == pytest.approx(1.0)
        assert [len(b) for b in engine.batches] == [1, 1]  # the cancelled job was never decoded
    except FutureTimeout:
        pytest.fail("the batcher stopped serving")
    finally:
        batcher.close()


def test_avg_logprob_is_the_mean_token_logprob_up_to_endoftext():

    # three steps over a 3-token vocabulary; token 2 is <|endoftext|>, the third step is padding
    scores = (torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.0, math.log(3.0), 0.0]), torch.tensor([9.0, 0.0, 0.0]))
    result = {"sequences": torch.tensor([7, 1, 2, 2]), "scores": scores}  # 7: a start token
    want = (math.log(1 / 3) + math.log(1 / 5)) / 2
    assert _avg_logprob(result, eos=2, temperature=0.0) == pytest.approx(want, abs=1e-4)
    halved = {**result, "scores": tuple(s / 0.5 for s in scores)}  # what a temperature-0.5 warper leaves
    assert _avg_logprob(halved, eos=2, temperature=0.5) == pytest.approx(want, abs=1e-4)


def test_verbose_json_segments_carry_avg_logprob_for_the_openai_client(serve):
    client, _ = serve()
    with ServerThread(client.app) as srv:
        oa = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
        r = oa.audio.transcriptions.create(file=("a.wav", _wav()), model="sg", response_format="verbose_json")
    assert r.segments and all(isinstance(s.avg_logprob, float) and s.avg_logprob <= 0 for s in r.segments)
    assert r.language == "english"


def test_segments_carry_their_generated_tokens_and_window_offset_as_openai_seek(tiny_whisper_dir):
    from transformers import WhisperProcessor

    tok = WhisperProcessor.from_pretrained(tiny_whisper_dir).tokenizer
    begin = tok.convert_tokens_to_ids("<|0.00|>")
    words = tok.encode(" hello world", add_special_tokens=False)
    # decoded in the window that starts at 30 s: it opens at <|1.00|> and ends at <|2.00|>
    ids = [begin + 50, *words, begin + 100]
    seg = {"start": torch.tensor(31.0, dtype=torch.float64), "end": torch.tensor(32.0, dtype=torch.float64),
           "tokens": torch.tensor(ids)}
    out = _segment(tok, seg, 40.0, DecodeOptions(timestamps=True))
    assert out["tokens"] == ids and out["seek"] == 3000
    assert out["text"] == "hello world" and (out["start"], out["end"]) == (31.0, 32.0)
    first_window = {**seg, "start": torch.tensor(1.0, dtype=torch.float64),
                    "end": torch.tensor(2.0, dtype=torch.float64)}
    assert _segment(tok, first_window, 40.0, DecodeOptions(timestamps=True))["seek"] == 0


def _wav_of(seconds: float) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, _clip(seconds), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_a_client_that_leaves_while_queued_is_not_decoded(serve, caplog):
    import socket
    import threading

    import httpx

    client, engine = serve(api_key="k")  # the key's middleware must not hide the disconnect
    calls, decode = [], engine.decode

    def slow(jobs):
        calls.append([j.model for j in jobs])
        time.sleep(2.0)
        return decode(jobs)

    engine.decode = slow
    with ServerThread(client.app) as srv, caplog.at_level(logging.WARNING, logger="asr_lora"):
        busy = threading.Thread(target=lambda: httpx.post(
            srv.url + "/v1/audio/transcriptions", files={"file": ("a.wav", _wav())}, data={"model": "sg"},
            headers={"Authorization": "Bearer k"}, timeout=60))
        busy.start()
        time.sleep(0.5)  # the worker is in the first decode
        req = httpx.Request("POST", srv.url + "/v1/audio/transcriptions", files={"file": ("b.wav", _wav())},
                            data={"model": "base"}, headers={"Authorization": "Bearer k"})
        raw = req.read()
        head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
        with socket.create_connection((srv.host, srv.port)) as s:
            s.sendall(f"POST /v1/audio/transcriptions HTTP/1.1\r\n{head}\r\n".encode() + raw)
            time.sleep(0.6)  # decoded, queued behind the busy worker: then the client leaves
        busy.join()
        time.sleep(0.5)
    assert calls == [["sg"]], calls
    assert any("went away" in m and "not decoded" in m for m in caplog.messages), caplog.messages


def test_audio_longer_than_the_servers_limit_is_a_400(serve):
    client, engine = serve(max_audio_s=5.0)
    r = client.post("/v1/audio/transcriptions", files={"file": ("long.wav", _wav_of(8.0))}, data={"model": "sg"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"]) == ("file", "audio_too_long") and "long.wav: 8.0 s" in err["message"]
    assert engine.batches == []
    assert _post(client, model="sg").status_code == 200


def test_a_sample_rate_no_recording_has_is_a_400_before_any_resampling(serve, tmp_path):
    """A WAV header alone sets what resampling to 16 kHz costs: 3 KB claiming 1 Hz would become 3,000
    s (192 MB) and then be refused as too long; a prime rate near 1 MHz asked torchaudio for a 64 GB
    kernel (a 500). Both are refused from the decoded samples, before resampling."""
    client, engine = serve(max_audio_s=1800.0)
    for rate, code in ((1, "bad_sample_rate"), (999_983, "bad_sample_rate")):
        buf = io.BytesIO()
        sf.write(buf, np.zeros(1500, dtype=np.int16), rate, format="WAV", subtype="PCM_16")
        r = client.post("/v1/audio/transcriptions", files={"file": ("odd.wav", buf.getvalue())}, data={"model": "sg"})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == code and f"odd.wav: sample rate {rate} Hz" in err["message"], err
    buf = io.BytesIO()  # 1 kHz is a rate, so this is judged on its length, before it is resampled
    sf.write(buf, np.zeros(1_000 * 1_900, dtype=np.int16), 1_000, format="WAV", subtype="PCM_16")
    r = client.post("/v1/audio/transcriptions", files={"file": ("slow.wav", buf.getvalue())}, data={"model": "sg"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "audio_too_long", r.text
    assert engine.batches == []


def test_an_odd_sample_rate_resamples_to_its_length(tmp_path):
    """44,101 Hz (a prime) would need a 44,101 x 16,000-tap sinc kernel in torchaudio (2.8 GB); soxr
    resamples it instead."""
    from asr_lora.data.audio import load_audio

    sf.write(tmp_path / "odd.wav", 0.2 * np.sin(np.arange(44_101) / 7.0), 44_101)  # one second
    x = load_audio(tmp_path / "odd.wav", 16000)
    assert x.dtype == np.float32 and abs(len(x) - 16000) <= 2


def test_an_oversized_upload_that_waits_for_100_continue_is_refused_unread(serve):
    import socket

    client, _ = serve(max_upload_mb=1)
    with ServerThread(client.app) as srv, socket.create_connection((srv.host, srv.port), timeout=10) as s:
        s.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 524288000\r\n\r\n")
        reply = b""
        while b"}}" not in reply and (chunk := s.recv(65536)):  # no body sent: the answer must come anyway
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert '"code":"file_too_large"' in reply


def test_timestamp_granularities_must_be_ones_the_format_gives(serve):
    client, _ = serve()
    for data, status in (({"timestamp_granularities[]": "bogus", "response_format": "verbose_json"}, 400),
                         ({"timestamp_granularities[]": "segment", "response_format": "json"}, 400),
                         ({"timestamp_granularities[]": "segment", "response_format": "verbose_json"}, 200)):
        r = _post(client, model="sg", **data)
        assert r.status_code == status, (data, r.text)
        if status == 400:
            assert r.json()["error"]["param"] == "timestamp_granularities[]"


def test_a_file_part_without_a_filename_is_named_as_such(serve):
    client, _ = serve()
    r = client.post("/v1/audio/transcriptions", data={"model": "sg", "file": "not an upload"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_file", r.text


def test_server_settings_no_request_could_use_are_refused_at_start(tiny_whisper_dir, adapter, capsys):
    from asr_lora import serve as serve_cli
    from asr_lora.inference.engine import AdapterSpecError, adapter_specs

    for kwargs, message in (({"beam_size": 0}, "beam size 0"), ({"max_new_tokens": 0}, "max new tokens 0"),
                            ({"max_new_tokens": 500}, "must be 1 to 444")):
        with pytest.raises(ValueError, match=message):
            Engine(str(tiny_whisper_dir), {"sg": adapter}, **kwargs)
    for name in ("train", "keys"):  # torch ModuleDict attributes: peft would fail with a KeyError
        with pytest.raises(AdapterSpecError, match="torch Module attribute"):
            adapter_specs([f"{name}={adapter}"], need_names=True)
    assert serve_cli.main(["--adapter", f"sg={adapter}", "--model", str(tiny_whisper_dir), "--max-batch", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: max_batch must be >= 1"


def test_a_short_clip_is_delivered_before_a_long_form_one_from_its_window(tiny_whisper_dir, adapter):
    engine = Engine(str(tiny_whisper_dir), {"sg": adapter}, max_new_tokens=4)
    batcher = Batcher(engine, max_batch=4, window_ms=300)
    try:
        long_ = batcher.submit(_clip(65.0), "sg")
        short = batcher.submit(_clip(1.0), "base")
        assert short.result(timeout=60)["duration"] == pytest.approx(1.0)
        assert not long_.done()  # the short result did not wait for the long-form decode
        assert long_.result(timeout=120)["duration"] == pytest.approx(65.0)
        assert engine.batches[0] == ["base"]
    finally:
        batcher.close()
