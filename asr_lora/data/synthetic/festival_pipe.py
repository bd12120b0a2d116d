"""Festival kept running per voice, fed one text file at a time (the corpus's festival renders).

Festival's start (reading its init files and the voice) is ~0.34 s of the ~0.42 s that one
`text2wave` call takes per clip on 2 cores, and the corpus renders ~360 festival clips. Festival's
own way to keep a voice loaded, `festival --server` + `festival_client --ttw`, needs a TCP port
per voice and worker; a pipe needs none. So each worker process keeps one `festival --pipe` per
voice setup and sends it text2wave's own synthesis steps for each file, which write the same WAV
bytes as `text2wave` (tests/test_festival_pipe.py compares them).

A process renders at most `RENDERS_PER_PROCESS` files: one process rendering festival-kal's first
42 corpus texts wrote a slightly different wave for the 42nd (state kept inside festival, which a
fresh `text2wave` never has, and which changed with the file names used). With a fresh process
every 8 renders, a fresh-clone corpus build (2 workers, so each process saw whichever texts the
pool gave it) was byte-identical to the text2wave-rendered corpus in all 2,512 clips, 359 of them
festival's. That is measured, not guaranteed by festival; synth.py falls back to text2wave when a
pipe fails.

Festival writes stdout through stdio, fully buffered on a pipe, so it runs under `stdbuf -oL`;
its errors (a SIOD error does not stop `--pipe`) arrive on the same stream before the end marker.
"""

from __future__ import annotations

import atexit
import functools
import os
import select
import shutil
import subprocess
import time

# text2wave's `save_record_wave_fp` and `main` (Debian festival 2.5), minus options that are not
# used here: RIFF output at the voice's own rate, volume 1.
_PRELUDE = r"""
(gc-status nil)
(defvar asr_fp nil)
(defvar asr_n 0)
(defvar asr_utt nil)
(define (asr_save utt)
  (if (eq? asr_n 0) (wave.save.header asr_fp (utt.wave utt) 'riff nil (list (list "numsamples" 0))))
  (set! asr_n (+ asr_n (get_param 'num_samples (wave.info (utt.wave utt)) 0)))
  (wave.save.data.fp (utt.wave utt) asr_fp 'riff nil)
  (set! asr_utt utt))
(define (asr_render infile outfile)
  (set! asr_n 0)
  (set! asr_utt nil)
  (set! asr_fp (fopen outfile "wb"))
  (set! tts_hooks (list utt.synth asr_save))
  (tts_file infile (tts_find_text_mode infile auto-text-mode-alist))
  (fseek asr_fp 0 0)
  (wave.save.header asr_fp (utt.wave asr_utt) 'riff nil (list (list "numsamples" asr_n)))
  (fclose asr_fp)
  (format t "asr_lora_done\n"))
"""
RENDERS_PER_PROCESS = 8
_DONE, _END = b"asr_lora_done\n", b"asr_lora_end\n"


class FestivalError(RuntimeError):
    """A festival render that failed, timed out or lost its process; the message has its output."""


@functools.cache  # asked once per festival clip; PATH does not change during a corpus build
def available() -> bool:
    return shutil.which("festival") is not None and shutil.which("stdbuf") is not None


def _quote(path: str) -> str:
    if '"' in path or "\\" in path:
        raise FestivalError(f"festival paths may not contain quotes or backslashes: {path!r}")
    return f'"{path}"'


class FestivalPipe:
    """One `festival --pipe` with `setup` (a Scheme expression selecting the voice) evaluated once."""

    def __init__(self, setup: str):
        self.setup = setup
        self.renders = 0
        self.proc = subprocess.Popen(["stdbuf", "-oL", "festival", "--pipe"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
        try:
            self._send(_PRELUDE + setup + "\n")
        except FestivalError:
            self.close()
            raise

    def _send(self, text: str) -> None:
        try:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise FestivalError(f"festival process for {self.setup} has gone: {e}") from e

    def render(self, text_file: str, wav_file: str, timeout: float) -> None:
        """Synthesise `text_file` into `wav_file`, as `text2wave -eval <setup> text_file -o wav_file`."""
        command = f"(asr_render {_quote(text_file)} {_quote(wav_file)})\n(format t \"asr_lora_end\\n\")\n"
        self.renders += 1
        self._send(command)
        out, deadline = b"", time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while _END not in out:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:  # `render` below closes the pipe
                raise FestivalError(f"timed out after {timeout:.0f}s; output: {out.decode(errors='replace')[-500:]}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise FestivalError(f"festival exited (rc={self.proc.wait()}); "
                                    f"output: {out.decode(errors='replace')[-500:]}")
            out += chunk
        body = out[: out.index(_END)]
        # Festival's other output (missing-diphone warnings) is not an error: text2wave's is not either.
        if _DONE not in body or b"SIOD ERROR" in body:
            raise FestivalError(body.decode(errors="replace").strip()[-500:] or "no output")

    def close(self) -> None:
        if self.proc.poll() is None:  # every file it wrote is closed: nothing to lose
            self.proc.kill()
        self.proc.wait(timeout=5)  # reaped, so no zombie outlives the render
        for f in (self.proc.stdin, self.proc.stdout):
            f.close()


_PIPES: dict[str, FestivalPipe] = {}


@atexit.register
def close_all() -> None:
    """Stop and reap this process's festival pipes, at interpreter exit (the corpus's spawned
    workers end through `sys.exit`, so they run it too)."""
    while _PIPES:
        _PIPES.popitem()[1].close()


def render(setup: str, text_file: str, wav_file: str, timeout: float) -> None:
    """`FestivalPipe.render` on this process's pipe for `setup` (started on first use; a pipe that
    failed, or has made `RENDERS_PER_PROCESS` renders, is replaced by a fresh one)."""
    pipe = _PIPES.get(setup)
    if pipe is not None and (pipe.renders >= RENDERS_PER_PROCESS or pipe.proc.poll() is not None):
        pipe.close()
        pipe = None
    if pipe is None:
        pipe = _PIPES[setup] = FestivalPipe(setup)
    try:
        pipe.render(text_file, wav_file, timeout)
    except FestivalError:
        _PIPES.pop(setup, None)
        pipe.close()
        raise
