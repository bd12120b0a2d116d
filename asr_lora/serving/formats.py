"""OpenAI transcription response formats and the OpenAI error body."""

from __future__ import annotations

import zlib

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
TIMESTAMP_FORMATS = {"srt", "vtt", "verbose_json"}


class APIError(Exception):
    """An error the client caused (or a refusal); rendered as {"error": {...}} with `status`."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _clock(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt(segments: list[dict]) -> str:
    blocks = [f"{i}\n{_clock(s['start'], ',')} --> {_clock(s['end'], ',')}\n{s['text']}\n"
              for i, s in enumerate(segments, 1)]
    return "\n".join(blocks)


def vtt(segments: list[dict]) -> str:
    blocks = [f"{_clock(s['start'], '.')} --> {_clock(s['end'], '.')}\n{s['text']}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 3) if data else 0.0


def verbose_json(result: dict, language: str, temperature: float, tokenizer=None) -> dict:
    segments = []
    for i, s in enumerate(result["segments"]):
        tokens = s.get("tokens")
        if tokens is None:  # a segment made from the whole text when the decode gave none
            tokens = tokenizer.encode(" " + s["text"], add_special_tokens=False) if tokenizer is not None else []
        seg = {"id": i, "seek": s.get("seek", 0), "start": s["start"], "end": s["end"], "text": s["text"],
               "tokens": tokens, "temperature": temperature, "compression_ratio": _compression_ratio(s["text"])}
        if "avg_logprob" in s:  # from the decode's scores; no_speech_prob has no real value to give
            seg["avg_logprob"] = s["avg_logprob"]
        segments.append(seg)
    return {"task": "transcribe", "language": language, "duration": result["duration"], "text": result["text"],
            "segments": segments}


def render(result: dict, response_format: str, language: str, temperature: float, tokenizer=None):
    """(body, media type): a dict for the JSON formats, a string for the others."""
    if response_format == "json":
        return {"text": result["text"]}, "application/json"
    if response_format == "verbose_json":
        return verbose_json(result, language, temperature, tokenizer), "application/json"
    if response_format == "text":
        return result["text"] + "\n", "text/plain; charset=utf-8"
    if response_format == "srt":
        return srt(result["segments"]), "text/plain; charset=utf-8"
    if response_format == "vtt":
        return vtt(result["segments"]), "text/vtt; charset=utf-8"
    raise APIError(400, f"response_format {response_format!r} is not supported; choose one of {list(FORMATS)}",
                   "response_format", "unsupported_response_format")
