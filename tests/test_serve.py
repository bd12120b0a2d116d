"""The serving stack (asr_lora.serving, python -m asr_lora.serve): mixed-adapter batches decode what
per-adapter decoding does, the real `openai` client works against it in every format, concurrent
requests naming different adapters get their own transcripts, bad input gets OpenAI error bodies,
and the browser page shows a transcript in headless Chromium."""

from __future__ import annotations

import logging

import base64
import json
import shutil
import subprocess
import sys
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from asr_lora.export.formats import export_adapter, write_model_card
from asr_lora.model.adapters import adapter_base, portable_base
from asr_lora.serving.app import ServerThread, Settings, create_app
from asr_lora.serving.batcher import Batcher
from asr_lora.inference.engine import Engine, Job, Options

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import common  # noqa: E402

KEY = "test-key-123"
FORMATS = ["json", "text", "srt", "vtt", "verbose_json"]


def _clip(seconds: float, freq: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    rng = np.random.default_rng(seed)
    return (0.2 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def setup(tiny_whisper_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    # b_std large enough that the two adapters and the base decode visibly different tokens.
    ads = {"sg": common.random_adapter(str(tiny_whisper_dir), tmp / "ad-sg", seed=1, b_std=0.5),
           "other": common.random_adapter(str(tiny_whisper_dir), tmp / "ad-other", seed=2, b_std=0.5)}
    clips = {}
    for i, (sec, freq) in enumerate([(1.0, 300), (2.0, 520), (1.5, 800), (2.5, 1100)]):
        clips[i] = tmp / f"clip{i}.wav"
        sf.write(clips[i], _clip(sec, freq, i), 16000)
    engine = Engine(str(tiny_whisper_dir), ads, max_new_tokens=8)
    batcher = Batcher(engine, max_batch=8, window_ms=150)
    switch = Engine(str(tiny_whisper_dir), ads, mode="switch", max_new_tokens=8)
    with ServerThread(create_app(batcher, Settings(api_key=KEY, max_upload_mb=2))) as srv:
        yield {"engine": engine, "switch": switch, "server": srv, "clips": clips, "tmp": tmp, "ads": ads,
               "batcher": batcher}
    batcher.close()


def _client(setup, key=KEY):
    return openai.OpenAI(base_url=setup["server"].url + "/v1", api_key=key, max_retries=0)


def _direct(setup, clip: int, model: str, timestamps=False) -> dict:
    """What per-adapter decoding (set_adapter / disable_adapter, one clip at a time) gives."""
    audio = sf.read(setup["clips"][clip], dtype="float32")[0]
    return setup["switch"].decode([Job(audio, model, Options(timestamps=timestamps))])[0]


def test_a_dora_adapter_is_served_beside_others_one_model_at_a_time(setup, tiny_whisper_dir):
    """peft takes no per-row adapter names for DoRA adapters: a batch naming one decodes model by
    model, with what each model decodes alone, instead of failing every request in it."""
    ads = {**setup["ads"], "dora": common.random_adapter(str(tiny_whisper_dir), setup["tmp"] / "ad-dora", seed=3,
                                                         b_std=0.5, use_dora=True)}
    eng = Engine(str(tiny_whisper_dir), ads, max_new_tokens=8)
    switch = Engine(str(tiny_whisper_dir), ads, mode="switch", max_new_tokens=8)
    names = ["sg", "dora", "base", "dora"]
    audios = [_clip(1.0 + 0.3 * i, 250 + 150 * i, i) for i in range(len(names))]
    got = eng.decode([Job(a, n) for a, n in zip(audios, names)])
    assert eng.batches == [["sg"], ["dora", "dora"], ["base"]]
    assert [g["text"] for g in got] == [switch.decode([Job(a, n)])[0]["text"] for a, n in zip(audios, names)]
    assert eng.decode([Job(audios[0], "sg"), Job(audios[2], "base")]) and eng.batches[-1] == ["sg", "base"]


def test_mixed_batch_equals_per_adapter_decoding(setup):
    eng, switch = setup["engine"], setup["switch"]
    names = ["sg", "base", "other", "sg", "base", "other"]
    audios = [_clip(1.0 + 0.3 * i, 250 + 150 * i, i) for i in range(len(names))]
    for timestamps in (False, True):
        n0 = len(eng.batches)
        mixed = eng.decode([Job(a, n, Options(timestamps=timestamps)) for a, n in zip(audios, names)])
        # ONE generate call for all three models; with timestamps one per model, as generate may
        # decode a clip again alone, which per-row adapter names cannot follow.
        assert eng.batches[n0:] == ([[n, n] for n in ("sg", "base", "other")] if timestamps else [names])
        single = [switch.decode([Job(a, n, Options(timestamps=timestamps))])[0] for a, n in zip(audios, names)]
        assert [m["text"] for m in mixed] == [s["text"] for s in single]
        assert [m["segments"] for m in mixed] == [s["segments"] for s in single]
    # The comparison can fail: the three models decode the same clip differently.
    same_clip = switch.decode([Job(audios[0], "sg")])[0]["text"], switch.decode([Job(audios[0], "base")])[0]["text"]
    assert len(set(same_clip + (switch.decode([Job(audios[0], "other")])[0]["text"],))) == 3


@pytest.mark.parametrize("model", ["base", "sg"])
def test_openai_client_every_response_format(setup, model):
    client, path = _client(setup), setup["clips"][1]
    want, want_ts = _direct(setup, 1, model), _direct(setup, 1, model, timestamps=True)
    for fmt in FORMATS:
        with open(path, "rb") as f:
            r = client.audio.transcriptions.create(file=f, model=model, response_format=fmt)
        if fmt == "json":
            assert r.text == want["text"] and r.text
        elif fmt == "text":
            assert r.strip() == want["text"]
        elif fmt == "verbose_json":
            assert r.text == want_ts["text"] and r.duration == pytest.approx(2.0)
            segs = [(s.start, s.end, s.text) for s in r.segments]
            assert segs == [(s["start"], s["end"], s["text"]) for s in want_ts["segments"]] and segs
            assert all(0 <= a <= b <= 2.0 for a, b, _ in segs)
        elif fmt == "srt":
            blocks = r.strip().split("\n\n")
            assert len(blocks) == len(want_ts["segments"])
            assert blocks[0].splitlines()[0] == "1" and " --> " in blocks[0].splitlines()[1]
            assert blocks[0].splitlines()[2] == want_ts["segments"][0]["text"]
        else:
            assert r.startswith("WEBVTT\n\n") and r.count(" --> ") == len(want_ts["segments"])


def test_concurrent_requests_with_different_adapters_get_their_own_transcripts(setup):
    client = _client(setup)
    jobs = [(i % 4, ["base", "sg", "other"][i % 3]) for i in range(12)]

    def key(r: dict) -> tuple:  # the random model's text tells the models apart, the duration the clips
        return r["text"], r["duration"], tuple((s["start"], s["end"], s["text"]) for s in r["segments"])

    want = {(c, m): key(_direct(setup, c, m, timestamps=True)) for c, m in set(jobs)}
    assert len(set(want.values())) == 12  # every (clip, model) answers differently, so a mix-up would show
    n0 = len(setup["engine"].batches)

    def call(job):
        c, m = job
        with open(setup["clips"][c], "rb") as f:
            r = client.audio.transcriptions.create(file=f, model=m, response_format="verbose_json")
        return key({"text": r.text, "duration": r.duration,
                    "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in r.segments]})

    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(call, jobs))
    assert got == [want[j] for j in jobs]
    batches = setup["engine"].batches[n0:]
    assert sum(len(b) for b in batches) == len(jobs)
    # Timestamped requests are batched one model at a time (Engine.decode says why) ...
    assert all(len(set(b)) == 1 for b in batches) and max(map(len, batches)) >= 2

    def text(job):
        c, m = job
        with open(setup["clips"][c], "rb") as f:
            return client.audio.transcriptions.create(file=f, model=m, response_format="json").text

    n0 = len(setup["engine"].batches)
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(text, jobs))
    assert got == [_direct(setup, *j)["text"] for j in jobs]
    # ... and plain ones share one generate call across adapters.
    assert max(len(set(b)) for b in setup["engine"].batches[n0:]) >= 2


def _wav_bytes(seconds=1.0) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, _clip(seconds, 440, 0), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_bad_input_gets_openai_errors_and_the_server_keeps_serving(setup):
    url, auth = setup["server"].url, {"Authorization": f"Bearer {KEY}"}
    good = _wav_bytes()
    silent = setup["tmp"] / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    cases = [  # (what, files, data, headers, status, code, param)
        ("not audio", {"file": ("notes.txt", b"hello, not audio at all")}, {"model": "sg"}, auth, 400, "unreadable",
         "file"),
        ("empty", {"file": ("empty.wav", b"")}, {"model": "sg"}, auth, 400, "empty_file", "file"),
        ("truncated", {"file": ("cut.wav", good[: len(good) // 2])}, {"model": "sg"}, auth, 400, "truncated", "file"),
        ("silent", {"file": ("silent.wav", silent.read_bytes())}, {"model": "sg"}, auth, 400, "silent", "file"),
        ("too large", {"file": ("big.wav", _wav_bytes(80.0))}, {"model": "sg"}, auth, 413, "file_too_large", "file"),
        ("unknown model", {"file": ("a.wav", good)}, {"model": "nope"}, auth, 404, "model_not_found", "model"),
        ("no model", {"file": ("a.wav", good)}, {}, auth, 400, "missing_model", "model"),
        ("no file", None, {"model": "sg"}, auth, 400, "missing_file", "file"),
        ("bad format", {"file": ("a.wav", good)}, {"model": "sg", "response_format": "xml"}, auth, 400,
         "unsupported_response_format", "response_format"),
        ("language on English-only", {"file": ("a.wav", good)}, {"model": "sg", "language": "fr"}, auth, 400,
         "unsupported_value", "language"),
        ("no API key", {"file": ("a.wav", good)}, {"model": "sg"}, {}, 401, "invalid_api_key", None),
        ("wrong API key", {"file": ("a.wav", good)}, {"model": "sg"}, {"Authorization": "Bearer wrong"}, 401,
         "invalid_api_key", None),
    ]
    with httpx.Client(timeout=60) as h:
        for what, files, data, headers, status, code, param in cases:
            r = h.post(f"{url}/v1/audio/transcriptions", files=files, data=data, headers=headers)
            assert r.status_code == status, (what, r.text)
            err = r.json()["error"]
            assert set(err) == {"message", "type", "param", "code"}, what
            assert (err["code"], err["param"]) == (code, param), (what, err)
            assert str(setup["tmp"]) not in err["message"] and "/tmp/" not in err["message"], what
        assert h.get(f"{url}/v1/models").status_code == 401
        assert h.get(f"{url}/health").json()["status"] == "ok"  # no key needed
        r = h.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", good)}, data={"model": "sg"},
                   headers=auth)
        assert r.status_code == 200 and r.json()["text"]
    client = _client(setup, key="wrong")
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    with pytest.raises(openai.NotFoundError):
        _client(setup).audio.transcriptions.create(file=("a.wav", good), model="nope")


def test_client_dropping_mid_upload_is_one_log_line(setup, caplog):
    import socket
    import time

    srv = setup["server"]
    part = (b'--XB\r\nContent-Disposition: form-data; name="model"\r\n\r\nsg\r\n'
            b'--XB\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            b'Content-Type: audio/wav\r\n\r\n' + _wav_bytes()[:1000])
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary=XB\r\nContent-Length: 500000\r\n\r\n").encode()
    with caplog.at_level(logging.INFO):
        with socket.create_connection((srv.host, srv.port)) as s:
            s.sendall(head + part)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("disconnected" in r.getMessage() for r in caplog.records):
            time.sleep(0.05)
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(noisy) == 1, [r.getMessage()[:200] for r in noisy]
    msg = noisy[0].getMessage()
    assert "model sg" in msg and f"{len(head + part) - len(head)} of 500000 bytes" in msg and "\n" not in msg
    assert noisy[0].levelno == logging.WARNING and noisy[0].exc_info is None
    assert httpx.get(f"{srv.url}/health").json()["status"] == "ok"


def test_long_audio_is_decoded_long_form_with_segments(setup):
    audio = np.concatenate([_clip(18.0, 400, 1), _clip(17.0, 900, 2)])
    path = setup["tmp"] / "long.wav"
    sf.write(path, audio, 16000)
    n0 = len(setup["engine"].batches)
    with open(path, "rb") as f:
        r = _client(setup).audio.transcriptions.create(file=f, model="sg", response_format="verbose_json")
    assert r.duration == pytest.approx(35.0) and r.segments
    assert all(0 <= s.start <= s.end <= 35.0 for s in r.segments)
    direct = setup["switch"].decode([Job(audio, "sg", Options(timestamps=True))])[0]
    assert r.text == direct["text"] and len(r.segments) == len(direct["segments"])
    assert setup["engine"].batches[n0:] == [["sg"]]


def test_models_list_cards_and_exported_adapters_are_portable(setup, tmp_path):
    models = {m.id: m for m in _client(setup).models.list().data}
    assert set(models) == {"base", "sg", "other"}
    card = models["sg"].card
    assert card["rank"] == 8 and card["alpha"] == 16 and card["targets"] == ["q_proj", "v_proj"]
    # A converted bundled model lives at <cache>/models/tiny.en-<hash>: exports name it portably.
    fake_cache = tmp_path / "models" / "tiny.en-0123456789"
    fake_cache.mkdir(parents=True)
    (fake_cache / "asr_lora_source.json").write_text("{}")
    src = tmp_path / "trained"
    shutil.copytree(setup["ads"]["sg"], src)
    cfg = json.loads((src / "adapter_config.json").read_text())
    (src / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(fake_cache)}))
    out = export_adapter(src, tmp_path / "export" / "adapter")
    assert adapter_base(out) == "bundled:tiny.en"
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "bundled:tiny.en"
    assert portable_base("/some/where/else") == "/some/where/else"
    write_model_card(out, {"model": {"base": "bundled:tiny.en"}, "export_wer": {"merged_hf": 0.179},
                           "lora": {"r": 8}, "this": "adapter"})
    readme = (out / "README.md").read_text()
    assert "openai/whisper-tiny.en" in readme
    (out.parent / "export_summary.json").write_text(json.dumps({"wer": {"merged_hf": 0.179, "ct2-int8": 0.18},
                                                                "beam_size": 5}))
    from asr_lora.serving.cards import adapter_card

    c = adapter_card(out)
    assert c["base"] == "bundled:tiny.en" and c["base_hub_id"] == "openai/whisper-tiny.en"
    assert c["export_wer"] == {"merged_hf": 0.179, "ct2-int8": 0.18} and c["beam_size"] == 5
    assert c["prompt"] is None
    (out / "prompt.txt").write_text("kopi, chope\n", encoding="utf-8")  # the term prompt an export ships
    assert adapter_card(out)["prompt"] == "kopi, chope"


def test_adapter_prompts_decode_requests_without_a_prompt_with_the_adapters_prompt_txt(setup, tmp_path,
                                                                                      tiny_whisper_dir):
    prompt = "kopi, chope, Tampines, Geylang"
    # a weak adapter (b_std 0.02): strong ones decode the same repeated token whatever the prompt
    ad = common.random_adapter(str(tiny_whisper_dir), tmp_path / "sg", seed=1, b_std=0.02)
    (ad / "prompt.txt").write_text(prompt + "\n", encoding="utf-8")
    engine = Engine(str(tiny_whisper_dir), {"sg": ad}, max_new_tokens=8)
    audio = sf.read(setup["clips"][1], dtype="float32")[0]
    plain, prompted = (engine.decode([Job(audio, "sg", Options(prompt=p))])[0]["text"] for p in (None, prompt))
    assert plain != prompted  # the prompt changes this clip's decoding, so the test can tell them apart
    batcher = Batcher(engine, max_batch=4, window_ms=10)
    try:
        with ServerThread(create_app(batcher, Settings(adapter_prompts=True))) as srv:
            def ask(model: str, **fields) -> str:
                files = {"file": ("clip.wav", setup["clips"][1].read_bytes(), "audio/wav")}
                r = httpx.post(srv.url + "/v1/audio/transcriptions", files=files,
                               data={"model": model, "response_format": "text", **fields}, timeout=60)
                assert r.status_code == 200, r.text
                return r.text.strip()

            assert ask("sg") == prompted.strip()  # no prompt field: the adapter's prompt.txt
            assert ask("sg", prompt="") == plain.strip()  # an explicit empty prompt: none
            assert ask("sg", prompt=prompt) == prompted.strip()
            assert ask("base") == engine.decode([Job(audio, "base", Options())])[0]["text"].strip()
            cards = {m["id"]: m["card"] for m in httpx.get(srv.url + "/v1/models").json()["data"]}
            assert cards["sg"]["prompt"] == prompt and cards["sg"]["prompt_by_default"] is True
    finally:
        batcher.close()
    batcher = Batcher(engine, max_batch=4, window_ms=10)
    try:
        with ServerThread(create_app(batcher)) as srv:  # off by default
            files = {"file": ("clip.wav", setup["clips"][1].read_bytes(), "audio/wav")}
            r = httpx.post(srv.url + "/v1/audio/transcriptions", files=files,
                           data={"model": "sg", "response_format": "text"}, timeout=60)
            assert r.text.strip() == plain.strip()
    finally:
        batcher.close()


def test_serve_cli_defaults_are_safe():
    from asr_lora.serve import parse_args

    a = parse_args(["--adapter", "sg=/x"])
    assert a.host == "127.0.0.1" and a.port == 8000 and a.model is None and a.max_upload_mb == 25.0
    assert a.adapter_prompts is False and parse_args(["--adapter-prompts"]).adapter_prompts is True
    r = subprocess.run([sys.executable, "-m", "asr_lora.serve", "--adapter", "sg=/does/not/exist"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and "adapter_config.json" in r.stderr  # adapters checked at start, not per request
    assert r.stderr.startswith("error: --adapter") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = subprocess.run([sys.executable, "-m", "asr_lora.serve", "--model", "/does/not/exist"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "/does/not/exist" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_serve_command_starts_and_passes_adapter_prompts_to_the_app(setup, tmp_path, tiny_whisper_dir):
    """README's serve command line, as a process: it listens, and --adapter-prompts reaches the cards."""
    import socket

    ad = tmp_path / "sg"
    shutil.copytree(setup["ads"]["sg"], ad)
    (ad / "prompt.txt").write_text("kopi, chope\n", encoding="utf-8")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "asr_lora.serve", "--adapter", f"sg={ad}", "--model",
                             str(tiny_whisper_dir), "--adapter-prompts", "--port", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            exited = proc.poll() is not None
            assert not exited and time.monotonic() < deadline, proc.stdout.read() if exited else "timeout"
            time.sleep(0.5)
        card = {m["id"]: m["card"] for m in httpx.get(url + "/v1/models").json()["data"]}["sg"]
        assert card["prompt"] == "kopi, chope" and card["prompt_by_default"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bench_serve_load_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("ASR_LORA_BENCH_RESULTS", str(tmp_path))
    r = subprocess.run([sys.executable, str(REPO / "bench" / "serve_load.py"), "--tiny", "--requests", "8",
                        "--concurrency", "4", "--name", "smoke"], capture_output=True, text=True, timeout=600,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "smoke.json").read_text())
    assert {row["variant"] for row in res["rows"]} == {"mixed batching", "per-request switching", "merged"}
    assert all(row["ok"] == 8 and row["lost"] == 0 for row in res["rows"])


def test_bench_serve_profile_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("ASR_LORA_BENCH_RESULTS", str(tmp_path))
    r = subprocess.run([sys.executable, str(REPO / "bench" / "serve_profile.py"), "--tiny", "--batch", "4",
                        "--reps", "1"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((tmp_path / "serve_profile_tiny.json").read_text())["rows"]
    assert [row["variant"] for row in rows][0].startswith("mixed") and len(rows) == 5
    assert all(0 < row["encoder_s"] < row["batch_s"] and len(row["tokens"]) == 4 for row in rows)


# ---------------------------------------------------------------- the browser page


def _webdriver(port: int, profile: Path):
    drv = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(base + "/status", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--window-size=1000,800",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"args": args}}}}
    sid = httpx.post(base + "/session", json=caps, timeout=60).json()["value"]["sessionId"]
    return drv, f"{base}/session/{sid}"


def _find(s: str, css: str) -> str:
    v = httpx.post(f"{s}/element", json={"using": "css selector", "value": css}, timeout=30).json()["value"]
    return next(iter(v.values()))


def _run_page(url: str, audio: Path, model: str, screenshot: Path, tmp: Path, record: bool = False) -> dict:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    drv, s = _webdriver(port, tmp / "chrome-profile")
    try:
        httpx.post(f"{s}/url", json={"url": url}, timeout=60)
        for _ in range(100):  # the adapter list comes from /v1/models
            opts = httpx.post(f"{s}/execute/sync", json={"script": "return [...document.querySelectorAll("
                                                          "'#model option')].map(o => o.value)", "args": []},
                              timeout=30).json()["value"]
            if opts:
                break
            time.sleep(0.1)
        js = f"document.getElementById('model').value = {json.dumps(model)};"
        httpx.post(f"{s}/execute/sync", json={"script": js, "args": []}, timeout=30)
        if record:
            httpx.post(f"{s}/element/{_find(s, '#rec')}/click", json={}, timeout=30)
            time.sleep(1.5)
            httpx.post(f"{s}/element/{_find(s, '#stop')}/click", json={}, timeout=30)
            time.sleep(0.5)
        else:
            httpx.post(f"{s}/element/{_find(s, '#file')}/value", json={"text": str(audio)}, timeout=30)
        httpx.post(f"{s}/element/{_find(s, '#go')}/click", json={}, timeout=30)
        state = {}
        for _ in range(600):
            state = httpx.post(f"{s}/execute/sync", json={"script": (
                "return {done: document.body.dataset.done || '', text: document.getElementById('transcript')"
                ".textContent, status: document.getElementById('status').textContent, rows: document"
                ".querySelectorAll('#segments tbody tr').length}"), "args": []}, timeout=30).json()["value"]
            if state["done"] or "error" in state["status"] or state["status"][:3].isdigit():
                break
            time.sleep(0.1)
        png = httpx.get(f"{s}/screenshot", timeout=60).json()["value"]
        screenshot.write_bytes(base64.b64decode(png))
        return state
    finally:
        httpx.delete(s, timeout=30)
        drv.terminate()
        drv.wait(timeout=30)


chromium = pytest.mark.skipif(shutil.which("chromium") is None or shutil.which("chromedriver") is None,
                              reason="chromium + chromium-driver (Debian) not installed; `make setup` installs them")


@chromium
def test_web_page_shows_transcript_and_segments_in_headless_chromium(setup, tmp_path):
    app = create_app(setup["batcher"], Settings(max_upload_mb=5))  # the same engine, no key for the page
    with ServerThread(app) as srv:
        png = tmp_path / "page.png"
        state = _run_page(srv.url + "/", setup["clips"][1], "sg", png, tmp_path)
        assert state["done"] == "1", state
        assert state["text"] == _direct(setup, 1, "sg", timestamps=True)["text"] and state["rows"] >= 1
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        state = _run_page(srv.url + "/", setup["clips"][1], "base", tmp_path / "rec.png", tmp_path / "r",
                          record=True)  # Chromium's fake microphone: a beep, recorded as webm/opus
        assert state["done"] == "1", state


def _say(text: str, path: Path) -> Path:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
    with wave.open(str(path)) as w:
        assert w.getnframes() > 0
    return path


@pytest.mark.slow
@chromium
def test_web_page_on_real_tiny_en(tmp_path):
    """The real bundled tiny.en, a portable adapter (`bundled:tiny.en` resolved from its config)."""
    ad = common.random_adapter("bundled:tiny.en", tmp_path / "trained", seed=3, b_std=0.002)
    out = export_adapter(ad, tmp_path / "export" / "adapter", base="bundled:tiny.en")
    assert adapter_base(out) == "bundled:tiny.en"
    engine = Engine(None, {"sg": out})
    assert engine.base_name == "bundled:tiny.en"
    batcher = Batcher(engine)
    clip = _say("Take the MRT to Tampines, then chope a table at the hawker centre.", tmp_path / "say.wav")
    try:
        with ServerThread(create_app(batcher)) as srv:
            shot = tmp_path / "serve_page.png"
            state = _run_page(srv.url + "/", clip, "sg", shot, tmp_path)
            assert state["done"] == "1" and "hawker" in state["text"].lower(), state
            if target := __import__("os").environ.get("ASR_LORA_SCREENSHOT"):
                shutil.copy(shot, target)
    finally:
        batcher.close()
