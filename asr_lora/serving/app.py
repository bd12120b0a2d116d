"""The OpenAI-compatible HTTP API: `POST /v1/audio/transcriptions`, `GET /v1/models`, `GET /health`,
and the browser page at `/`.

Every refusal is an OpenAI error body `{"error": {"message", "type", "param", "code"}}` and the
server keeps serving. Uploads are decoded by `asr_lora.data.audio.load_audio`, the loader training
uses, so the same files are refused for the same reasons (`code` is the loader's reason key). A
request never names a path: the upload goes to a private temporary file whose only borrowed part
is a sanitised suffix, and error messages name the client's file name, not the server's path.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from asr_lora.data.audio import SAMPLE_RATE, AudioError, check_audio, load_audio
from asr_lora.inference.engine import BASE, ENGLISH, AdapterSpecError, OptionError, Options, language_name
from asr_lora.serving.batcher import Batcher
from asr_lora.serving.cards import adapter_card
from asr_lora.serving.formats import FORMATS, TIMESTAMP_FORMATS, APIError, render
from asr_lora.serving.page import PAGE

log = logging.getLogger(__name__)
FORM_ALLOWANCE = 64 * 1024  # multipart boundaries and the small text fields around the file
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")
_MODEL_FIELD = re.compile(rb'name="model"\r\n(?:[^\r\n]*\r\n)*?\r\n([^\r\n]{1,200})\r\n')
DISCONNECT_POLL_S = 0.25  # how often a waiting request checks that its client is still there
CLIENT_CLOSED = 499  # nginx's code for a client that went away; nobody reads it, the log does
OPEN_ROUTES = {"/health", "/"}  # the page is static HTML; its API calls carry the key typed into it


@dataclass
class Settings:
    api_key: str | None = None
    max_upload_mb: float = 25.0
    # The upload limit bounds bytes, not time: a low sample rate or bit rate packs hours into a few
    # megabytes, each of which would hold the one decode worker (and its memory) for every client.
    max_audio_s: float = 1800.0
    # A request to an adapter that sends no `prompt` field is decoded with the adapter's `prompt.txt`
    # (the term prompt its evaluation scored as adapted + prompt), so the server decodes the system
    # that was scored without every client copying the prompt; `prompt=""` still decodes without one.
    adapter_prompts: bool = False

    @property
    def max_body(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024) + FORM_ALLOWANCE


def decode_upload(data: bytes, filename: str, max_s: float = float("inf")):
    """float32 16 kHz mono audio, or raise APIError(400) with the loader's reason as `code`; audio
    longer than `max_s` seconds is a 400 with code `audio_too_long`."""
    suffix = Path(filename or "").suffix.lower()
    suffix = suffix if _SUFFIX.match(suffix) else ""
    with tempfile.TemporaryDirectory(prefix="asr-lora-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            audio = load_audio(path, SAMPLE_RATE, max_seconds=max_s)  # the length judged before resampling
            # The transcribe CLI's rule: no samples, NaN or silence is refused, any length is decoded.
            reason = check_audio(audio, SAMPLE_RATE, min_s=0.0, max_s=float("inf"))
            if reason in ("nan", "silent") or len(audio) == 0:
                raise AudioError(path, reason or "empty_file", f"audio is {reason or 'empty'}")
        except AudioError as e:
            msg = str(e).replace(str(path), filename or "file").replace("over the limit", "over this server's limit")
            raise APIError(400, msg, "file", e.reason) from None
    return audio


class Gone(Exception):
    """The client closed the connection while its transcription waited or ran."""

    def __init__(self, model: str, queued: bool) -> None:
        super().__init__(f"client went away while its {model} transcription "
                         + ("waited; not decoded" if queued else "was being decoded"))


class Disconnected(Exception):
    """The client closed the connection mid-upload: `received` bytes of `declared`, for `model`."""

    def __init__(self, received: int, declared: str | None, model: str | None) -> None:
        self.received, self.declared, self.model = received, declared, model
        super().__init__(f"client disconnected mid-upload (model {model or 'not yet sent'}, "
                         f"{received} of {declared or '?'} bytes received)")


def _too_large(size: int | str, limit: int) -> APIError:
    return APIError(413, f"upload of {size} bytes exceeds the limit of {limit - FORM_ALLOWANCE} bytes",
                    "file", "file_too_large")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    over = declared is not None and declared.isdigit() and int(declared) > limit
    if over and request.headers.get("expect", "").lower() == "100-continue":
        # The client waits for "100 Continue" before it sends the body: refuse now, unread. Others
        # are drained, since closing on a client still sending shows it a reset, not the 413.
        raise _too_large(declared, limit)
    body, size = bytearray(), 0
    try:
        async for chunk in request.stream():  # drained even when over the limit, never kept
            size += len(chunk)
            if not over and size <= limit:
                body += chunk
    except ClientDisconnect:
        m = _MODEL_FIELD.search(bytes(body))
        raise Disconnected(size, declared, m.group(1).decode(errors="replace").strip() if m else None) from None
    if over or size > limit:
        raise _too_large(size, limit)
    return bytes(body)


class ApiKey:
    """`Authorization: Bearer KEY` on every route but `OPEN_ROUTES`. A plain ASGI middleware, not
    `@app.middleware("http")`: starlette's BaseHTTPMiddleware wraps `receive` so that
    `request.is_disconnected()` never sees a client leave, and a gone client's job would be decoded."""

    def __init__(self, app, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_ROUTES:
            header = Headers(scope=scope).get("authorization", "")
            token = header[7:] if header.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), self.key):
                err = APIError(401, "invalid or missing API key (send Authorization: Bearer KEY)",
                               None, "invalid_api_key", "invalid_request_error")
                await JSONResponse(err.body(), status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _field(form, name: str, default: str | None = None) -> str | None:
    v = form.get(name)
    return v.strip() if isinstance(v, str) and v.strip() else default


def create_app(batcher: Batcher, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = batcher.engine
    app = FastAPI(title="asr-lora", docs_url=None, redoc_url=None, openapi_url=None)
    cards = {name: adapter_card(path) for name, path in engine.adapter_dirs.items()}
    for name, card in cards.items():
        card["prompt_by_default"] = settings.adapter_prompts and card["prompt"] is not None
        if card["prompt_by_default"]:
            _check_default_prompt(engine, name, card["prompt"])

    if settings.api_key:
        app.add_middleware(ApiKey, key=settings.api_key)

    @app.exception_handler(Gone)
    @app.exception_handler(Disconnected)
    async def disconnected(_, e: Exception):
        log.warning("%s", e)  # one line: the server is fine and nobody is left to answer
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(APIError)
    async def api_error(_, e: APIError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return JSONResponse(APIError(e.status_code, str(e.detail), None, code).body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def server_error(_, e: Exception):
        log.exception("unhandled error")
        body = APIError(500, f"internal error: {type(e).__name__}", None, "server_error", "server_error").body()
        return JSONResponse(body, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(PAGE)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": engine.models}

    @app.get("/v1/models")
    async def models():
        data = [{"id": BASE, "object": "model", "created": 0, "owned_by": "asr-lora",
                 "card": {"base": engine.base_name, "adapter": None}}]
        data += [{"id": n, "object": "model", "created": 0, "owned_by": "asr-lora", "card": c}
                 for n, c in cards.items()]
        return {"object": "list", "data": data}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        body = await _read_body(request, settings.max_body)
        request._body = body  # starlette's form parser reads the cached body
        try:
            form = await request.form(max_files=1, max_fields=32)
        except Exception as e:
            raise APIError(400, f"request is not valid multipart/form-data: {e}", None, "invalid_form") from None
        upload = form.get("file")
        if isinstance(upload, str):  # a part sent without a filename is a text field to the parser
            raise APIError(400, "field 'file' must be a file upload (a part with a filename)", "file", "invalid_file")
        if not isinstance(upload, UploadFile):
            raise APIError(400, "missing required multipart field 'file'", "file", "missing_file")
        model = _field(form, "model")
        if model is None:
            raise APIError(400, "missing required field 'model' (base or an adapter name)", "model", "missing_model")
        if model not in engine.models:
            raise APIError(404, f"model {model!r} not found; available: {engine.models}", "model", "model_not_found")
        fmt = _field(form, "response_format", "json")
        if fmt not in FORMATS:
            raise APIError(400, f"response_format {fmt!r} is not supported; choose one of {list(FORMATS)}",
                           "response_format", "unsupported_response_format")
        granularities = form.getlist("timestamp_granularities[]")
        if "word" in granularities:
            raise APIError(400, "word timestamps are not supported; use 'segment'", "timestamp_granularities[]",
                           "unsupported_value")
        if bad := [g for g in granularities if g != "segment"]:
            raise APIError(400, f"timestamp_granularities[] {bad[0]!r} is not one of ['segment', 'word']",
                           "timestamp_granularities[]", "invalid_value")
        if granularities and fmt != "verbose_json":  # as OpenAI: the timestamps are verbose_json's segments
            raise APIError(400, "timestamp_granularities[] needs response_format 'verbose_json'",
                           "timestamp_granularities[]", "invalid_value")
        try:
            temperature = float(_field(form, "temperature", "0"))
        except ValueError:
            raise APIError(400, "temperature must be a number", "temperature", "invalid_value") from None
        language = _field(form, "language")
        if language and not engine.multilingual and language.lower() in ENGLISH:
            language = None  # English-only models take no language argument
        prompt = _field(form, "prompt")
        if "prompt" not in form and model in cards and cards[model]["prompt_by_default"]:
            prompt = cards[model]["prompt"]
        options = Options(timestamps=fmt in TIMESTAMP_FORMATS, logprobs=fmt == "verbose_json",
                          temperature=temperature, prompt=prompt, language=language)
        data = await upload.read()
        audio = await run_in_threadpool(decode_upload, data, upload.filename or "file", settings.max_audio_s)
        try:  # in a thread: submit tokenises the prompt, however long the client made it
            fut = await run_in_threadpool(batcher.submit, audio, model, options)
        except OptionError as e:
            raise APIError(400, str(e), e.param, e.code) from None
        result = await _result_unless_gone(request, fut, model)
        content, media = render(result, fmt, language_name(language), temperature, engine.processor.tokenizer)
        if isinstance(content, dict):
            return JSONResponse(content)
        return PlainTextResponse(content, media_type=media)

    return app


async def _result_unless_gone(request: Request, fut, model: str):
    """The decode's result; when the client goes away first, its queued job is cancelled (the
    batcher skips it: nobody would read it) and the request ends as `CLIENT_CLOSED`."""
    waiting = asyncio.ensure_future(asyncio.wrap_future(fut))
    while True:
        done, _ = await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S)
        if done:
            return waiting.result()
        if await request.is_disconnected():
            queued = fut.cancel()  # False once its batch has started: that decode runs to its end
            raise Gone(model, queued)


def _check_default_prompt(engine, adapter: str, prompt: str) -> None:
    # A prompt.txt the tokenizer refuses would fail every request to the adapter: refuse it at start.
    try:
        engine.prepare(Options(prompt=prompt))
    except OptionError as e:
        raise AdapterSpecError(f"adapter {adapter!r}: its prompt.txt is refused: {e}") from None


class ServerThread:
    """uvicorn serving `app` from a background thread (tests, benchmarks); port 0 picks a free one.

    >>> with ServerThread(app) as s: openai.OpenAI(base_url=s.url + "/v1", api_key="x")
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        import threading

        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="asr-lora-uvicorn", daemon=True)
        self.host = host

    def __enter__(self) -> "ServerThread":
        import time

        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > 30:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
