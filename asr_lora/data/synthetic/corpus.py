"""Build the embedded, synthetic Singapore English corpus (and validate its cache).

Inputs live in `data/sg_english/`: Singlish sentences, plain-English control sentences and a
voice inventory. The corpus is split so that test scores say something about unseen speech:

* speaker-disjoint: every voice (and every human behind a voice) belongs to one split, and a
  split's sentences are rendered only by that split's voices;
* sentence-disjoint: sentences are shuffled with the seed and cut 75/10/15 into
  train/dev/test before any voice is chosen;
* control sentences (subset="control") go to dev and test only: they exist to measure
  forgetting of general English, never to be trained on. Real recorded English from Debian's
  pocketsphinx-testdata joins the test control set when installed;
* dev-only control sentences (opt-in `data.dev_control`, subset="control", ids "dctl-...") join the dev
  control set, read like the control sentences, so that recipes chosen on dev see enough general
  English to tell forgetting from noise; dealt by their own seeded rngs, they change nothing else;
* train-only domain sentences (`data.train_sentences`, subset="main", ids "sgt-...") go to
  train only, two train voices each: more contexts for the domain's terms, never scored. None may
  repeat a domain or control sentence;
* general sentences (subset="general") go to train only, one train voice each: plain English
  replayed during training (rehearsal) so the adapter does not forget general English. They never
  reach dev or test and share no sentence with the domain or control set;
* held-out parts: dev and test also have voices of engines that no train voice uses: a
  natural-sounding neural voice (part="neural") and concatenative engines (part="unseen_engine"),
  see `voices.py`. Each dev/test main and control sentence is rendered once more per held-out
  part, by one of its voices, dealt by the part's own seeded rng, so the rest of the plan (and its
  cached audio) is the same with or without them. Quoted figures and the forgetting gate come
  from the first held-out part; records carry their part in `Record.part`.

Audio files are named by a hash of (text, voice spec), so a file that exists is exactly the
render the plan asks for; a rebuild with another seed re-renders only new pairs. The manifest is
reused untouched when `corpus_info.json` holds the same inputs hash and every file exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import soundfile as sf

from asr_lora.core.io import file_sha256, write_json, write_text
from asr_lora.core.paths import cache_root
from asr_lora.data.records import Record
from asr_lora.data.scope import Scope, check_read, describe, in_scope, left_out, scope_tag
from asr_lora.data.synthetic.engines import SYNTH_VERSION, Voice
from asr_lora.data.synthetic.real_control import add_real_control, real_control_sources
from asr_lora.data.synthetic.render import render_missing
from asr_lora.data.synthetic.respell import respelled_takes
from asr_lora.data.synthetic.sentences import (
    CONTROL, DATA_DIR, DEV_CONTROL, GENERAL, SENTENCES, TRAIN_SENTENCES, CorpusInputs, TextFile, check_terms,
    load_sentences, read_sentences, sentence_keys,
)
from asr_lora.data.synthetic.voices import HELD_OUT_PARTS, VOICES, load_voices, part_of

__all__ = ["CONTROL", "DATA_DIR", "DEV_CONTROL", "GENERAL", "SENTENCES", "TRAIN_SENTENCES", "VOICES", "CorpusInputs",
           "build_corpus", "load_manifest", "load_sentences", "load_voices", "plan_corpus"]

log = logging.getLogger(__name__)


PLAN_VERSION = 3  # bump when the split/assignment logic changes, to invalidate caches
SPLIT_FRACTIONS = {"train": 0.75, "dev": 0.10, "test": 0.15}


# Voices per sentence. Two voices per main sentence gives ~1150 train / ~230 test utterances
# from ~770 sentences and builds in a few minutes on two cores; control and general (~440
# short train-only replay clips) need only one.
VOICES_PER_SENTENCE = {"main": 2, "control": 1, "general": 1}


# Unseen-engine voices per dev/test sentence (main and control alike): every dev/test sentence
# once, so the headline part has as many sentences as the seen-engine part.
UNSEEN_VOICES_PER_SENTENCE = 1

ID_PREFIX = {"main": "sg", "control": "ctl", "general": "gen", "train_only": "sgt", "dev_control": "dctl"}
CONTROL_DEV_FRACTION = 1 / 3


# The smallest honest dev and test parts: fewer sentences stop the build (`check_split_sizes`).
MIN_DEV_SENTENCES, MIN_TEST_SENTENCES = 3, 5


def default_cache_dir(name: str = "sg_english") -> Path:
    return cache_root() / "corpora" / name


def _deal(voices: list[Voice], k: int, n: int, rng: random.Random) -> list[list[Voice]]:
    """n hands of k distinct voices, dealt from reshuffled decks so every voice gets an equal
    share while the pairings still vary."""
    k = min(k, len(voices))
    deck: list[Voice] = []
    hands = []
    for _ in range(n):
        hand: list[Voice] = []
        while len(hand) < k:
            if not deck:
                deck = rng.sample(voices, len(voices))
            v = deck.pop()
            if v in hand:
                deck.insert(0, v)
            else:
                hand.append(v)
        hands.append(hand)
    return hands


def _cut(items: list, fractions: dict[str, float]) -> dict[str, list]:
    n = len(items)
    sizes = {s: max(1, round(f * n)) if n >= len(fractions) else 0 for s, f in fractions.items()}
    first = next(iter(fractions))
    sizes[first] = n - sum(v for s, v in sizes.items() if s != first)
    out, i = {}, 0
    for s in fractions:
        out[s] = items[i : i + sizes[s]]
        i += sizes[s]
    return out


def check_split_sizes(n_sentences: int, n_control: int) -> None:
    """Refuse inputs too small for dev and test parts worth scoring, with the numbers needed,
    rather than train on everything and test on nothing."""
    def smallest(fractions, minimum):
        return next(n for n in range(1, 10_000) if all(len(v) >= minimum[k] for k, v in _cut(list(range(n)),
                                                                                                fractions).items()))
    need = smallest(SPLIT_FRACTIONS, {"train": 1, "dev": MIN_DEV_SENTENCES, "test": MIN_TEST_SENTENCES})
    ctl_need = smallest({"test": 1 - CONTROL_DEV_FRACTION, "dev": CONTROL_DEV_FRACTION}, {"test": 2, "dev": 1})
    if n_sentences < need or n_control < ctl_need:
        cut = ", ".join(f"{k} {v:.0%}" for k, v in SPLIT_FRACTIONS.items())
        raise ValueError(
            f"too few sentences for honest splits: {n_sentences} usable domain sentences and {n_control} control "
            f"sentences; need at least {need} domain sentences (cut {cut}, for >= {MIN_DEV_SENTENCES} dev and >= "
            f"{MIN_TEST_SENTENCES} test sentences no voice trains on) and {ctl_need} control sentences")


# Each input and those it may share no sentence with: a sentence in both could be trained on and scored
# (main is cut into train, dev and test; general and train-only sentences are only trained on).
_DISJOINT = {"control": ("main",), "general": ("main", "control"), "train_only": ("main", "control"),
             "dev_control": ("main", "control", "general", "train_only")}


def plan_corpus(
    sentences: list[str], control: list[str], voices: list[Voice], seed: int = 0, max_sentences: int | None = None,
    general: list[str] | None = None, sources: dict[str, list[str]] | None = None, voices_path: Path = VOICES,
    train_only: list[str] | None = None, dev_control: list[str] | None = None,
) -> list[Record]:
    """Every synthetic utterance as a Record (audio_path relative to the corpus dir), no audio.

    `general` sentences (rehearsal data) all go to train, one train voice each; so do `train_only`
    domain sentences, with the main sentences' voices per sentence. `dev_control` sentences join the
    dev control set only, read like the control sentences. `sources` names each sentence's file:line
    per subset (keys main, control, general, train_only, dev_control; default: the shipped files,
    line = position)."""
    general, train_only, dev_control = general or [], train_only or [], dev_control or []
    texts = dict(main=sentences, control=control, general=general, train_only=train_only, dev_control=dev_control)
    check_split_sizes(len(sentences), len(control))
    if sources is None:
        shown = {subset: CorpusInputs().shown(path) for subset, path in
                 (("main", SENTENCES), ("control", CONTROL), ("general", GENERAL), ("train_only", TRAIN_SENTENCES),
                  ("dev_control", DEV_CONTROL))}
        sources = {subset: [f"{shown[subset]}:{i + 1}" for i in range(len(t))] for subset, t in texts.items()}
    rng = random.Random(seed)
    order = rng.sample(range(len(sentences)), len(sentences))
    ctl_order = rng.sample(range(len(control)), len(control))
    if max_sentences is not None:
        order = order[:max_sentences]
        ctl_order = ctl_order[: max(2, max_sentences // 4)]
    for subset, others in _DISJOINT.items():
        seen = {k: (o.replace("_", "-"), w) for o in others for t, w in zip(texts[o], sources[o])
                for k in sentence_keys(t)}
        if clash := [(i, *seen[k]) for i, t in enumerate(texts[subset])
                     if (k := next((k for k in sentence_keys(t) if k in seen), None))]:
            i, other, where = clash[0]
            raise ValueError(f"{sources[subset][i]}: {subset.replace('_', '-')} sentence repeats the {other} sentence "
                             f"at {where} ({len(clash)} such lines): {texts[subset][i]!r}")
    # A separate seeded rng, so adding general data changes neither the main/control split nor
    # their voice hands (their cached audio stays valid).
    gen_rng = random.Random(f"general-{seed}")
    gen_order = gen_rng.sample(range(len(general)), len(general))
    train_rng = random.Random(f"train-only-{seed}")  # likewise for the train-only domain sentences
    train_order = train_rng.sample(range(len(train_only)), len(train_only))
    dev_rng = random.Random(f"dev-control-{seed}")  # likewise for the dev-only control sentences
    dev_order = dev_rng.sample(range(len(dev_control)), len(dev_control))
    if max_sentences is not None:
        gen_order = gen_order[: max(1, max_sentences // 4)] if general else []
        train_order = train_order[: max(1, max_sentences // 4)] if train_only else []
        dev_order = dev_order[: max(1, max_sentences // 4)] if dev_control else []
    # Seen-engine voices only here: each held-out part below is dealt apart, by its own rng.
    by_split = {s: [v for v in voices if v.split == s and part_of(v) not in HELD_OUT_PARTS] for s in SPLIT_FRACTIONS}
    ctl_fracs = {"test": 1 - CONTROL_DEV_FRACTION, "dev": CONTROL_DEV_FRACTION}
    main_idx, ctl_idx = _cut(order, SPLIT_FRACTIONS), _cut(ctl_order, ctl_fracs)

    records = []
    jobs = [("main", sentences, main_idx, rng, by_split, VOICES_PER_SENTENCE["main"]),
            ("control", control, ctl_idx, rng, by_split, VOICES_PER_SENTENCE["control"]),
            ("general", general, {"train": gen_order}, gen_rng, by_split, VOICES_PER_SENTENCE["general"]),
            ("train_only", train_only, {"train": train_order}, train_rng, by_split, VOICES_PER_SENTENCE["main"]),
            ("dev_control", dev_control, {"dev": dev_order}, dev_rng, by_split, VOICES_PER_SENTENCE["control"])]
    for part in HELD_OUT_PARTS:
        held = {s: dealt for s in ("dev", "test")
                if (dealt := [v for v in voices if v.split == s and part_of(v) == part and not v.reads_all])}
        if held:
            # A separate seeded rng per part: adding (or changing) one part's voices leaves the rest as is.
            part_rng = random.Random(f"{part.replace('_', '-')}-{seed}")
            jobs += [(kind, texts, {s: idx[s] for s in held if s in idx}, part_rng, held, UNSEEN_VOICES_PER_SENTENCE)
                     for kind, texts, idx in (("main", sentences, main_idx), ("control", control, ctl_idx))]
            if "dev" in held:
                jobs.append(("dev_control", dev_control, {"dev": dev_order},
                             random.Random(f"{part.replace('_', '-')}-dev-control-{seed}"), held,
                             UNSEEN_VOICES_PER_SENTENCE))
    # Voices that read every sentence of their split draw nothing from any rng: the dealt hands stay
    # as they were without them.
    for v in voices:
        if v.reads_all:
            jobs += [("main", sentences, {v.split: main_idx.get(v.split, [])}, None, {v.split: [v]}, 1),
                     ("control", control, {v.split: ctl_idx.get(v.split, [])}, None, {v.split: [v]}, 1),
                     ("dev_control", dev_control, {"dev": dev_order if v.split == "dev" else []}, None,
                      {"dev": [v]}, 1)]
    for kind, texts, split_idx, deal_rng, pool, k in jobs:
        subset = {"train_only": "main", "dev_control": "control"}.get(kind, kind)
        for split, idx in split_idx.items():
            if not idx:
                continue
            if not pool[split]:
                raise ValueError(f"no voices for split {split!r} in {voices_path}")
            hands = [pool[split]] * len(idx) if deal_rng is None else _deal(pool[split], k, len(idx), deal_rng)
            for i, hand in zip(idx, hands):
                for v in hand:
                    key = hashlib.sha1(json.dumps([texts[i], v.spec()], sort_keys=True).encode()).hexdigest()[:16]
                    prefix = ID_PREFIX[kind]
                    records.append(Record(
                        id=f"{prefix}-{i:04d}-{v.id}", text=texts[i], audio_path=f"audio/{v.id}/{key}.wav",
                        speaker=v.speaker, accent=v.accent, split=split, subset=subset, engine=v.engine,
                        voice=v.id, part=part_of(v), source=sources[kind][i],
                    ))
    return records


def _summary(records: list[Record]) -> dict:
    counts: dict = defaultdict(Counter)
    parts: dict = defaultdict(Counter)
    hours: dict = defaultdict(float)
    voices: dict = defaultdict(set)
    for r in records:
        counts[r.split][r.subset] += 1
        if r.part:
            parts[r.split][f"{r.part}/{r.subset}"] += 1
        hours[r.split] += (r.duration or 0.0) / 3600
        if r.voice:
            voices[r.split].add(r.voice)
    return {
        "counts": {s: dict(c) for s, c in counts.items()},
        "parts": {s: dict(sorted(c.items())) for s, c in parts.items()},
        "hours": {s: round(h, 4) for s, h in hours.items()},
        "voices": {s: sorted(v) for s, v in voices.items()},
        "utterances": len(records),
    }


def corpus_files(out_dir: Path, scope: Scope | None = None) -> tuple[Path, Path]:
    """(manifest, corpus info) of the whole corpus, or of the clips of `scope` (data/scope.py)."""
    tag = "" if scope is None else f".{scope_tag(scope)}"
    return out_dir / f"manifest{tag}.jsonl", out_dir / f"corpus_info{tag}.json"


def info_of(manifest: Path) -> Path:
    """The corpus_info file written with `manifest`."""
    return manifest.with_name("corpus_info" + manifest.name[len("manifest"):].removesuffix("l"))


def load_manifest(path: Path) -> list[Record]:
    """manifest.jsonl -> Records (audio_filepath becomes audio_path)."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Record(**{("audio_path" if k == "audio_filepath" else k): v for k, v in row.items()}) for row in rows]


_REUSE_LOGGED: set = set()


def _read_inputs(inputs: CorpusInputs) -> tuple[dict[str, TextFile], TextFile | None]:
    texts = {role: read_sentences(getattr(inputs, role), role, shown=inputs.shown(getattr(inputs, role)))
             for role in ("sentences", "control", "general", "train_sentences", "dev_control") if getattr(inputs, role)}
    terms = None
    if inputs.terms is not None:
        domain = texts["sentences"].texts + (texts["train_sentences"].texts if "train_sentences" in texts else [])
        terms = check_terms(inputs.terms, domain, shown=inputs.shown(inputs.terms))
    return texts, terms


def build_corpus(
    out_dir: Path | None = None, seed: int = 0, workers: int = 2, max_sentences: int | None = None,
    progress: bool = True, inputs: CorpusInputs = CorpusInputs(), scope: Scope | None = None,
    respell: tuple[int, tuple[str, ...]] = (0, ()),
) -> Path:
    """Render (or reuse) the corpus under `out_dir`; returns the path of its manifest.jsonl.

    Writes out_dir/audio/<voice>/<hash>.wav, manifest.jsonl (one `Record.to_manifest()` row per
    utterance, absolute audio_filepath) and corpus_info.json (with every skipped input line and its
    reason in "text_skips"; the usable terms of `inputs.terms` in terms.txt). Audio is named by
    (text, voice), so a changed sentence file renders only its new lines. Raises SynthError if a
    voice in the inventory is not installed, ValueError for unusable inputs (file and line named).
    With `scope`, only its splits' and parts' clips: manifest.<tag>.jsonl, corpus_info.<tag>.json ("left_out").
    `respell`: (takes, languages) of respelled takes (respell.py) added to train.
    """
    t0 = time.time()
    name = inputs.name
    out_dir = Path(out_dir) if out_dir is not None else default_cache_dir(name)
    manifest, info_path = corpus_files(out_dir, scope)
    paths = {"sentences": inputs.sentences, "control": inputs.control, "general": inputs.general,
             "voices": inputs.voices, "terms": inputs.terms, "train_sentences": inputs.train_sentences,
             "dev_control": inputs.dev_control}
    # Hashed for the cache key before any reader opens them, so checked here with the readers' words.
    for role, path in paths.items():
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"data.{role}: no such file: {path}")
    # Keyed by role: two roles' files may share a name (dom/lines.txt, ctl/lines.txt).
    files = {f"{role}:{p.name}": file_sha256(p) for role, p in paths.items() if p}
    real_sources = [str(s[2]) for s in real_control_sources()]
    key = [PLAN_VERSION, SYNTH_VERSION, seed, max_sentences, files, real_sources]
    if respell[0]:  # only then, so corpora without respelled takes keep their cache
        key.append(list(respell))
    inputs_hash = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    if manifest.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if info.get("inputs_hash") == inputs_hash:
            missing = [r.id for r in load_manifest(manifest) if not Path(r.audio_path).is_file()]
            if not missing:
                # One entry point may ask twice (the streaming size estimate, then preparation):
                # say it once per process.
                if (manifest, inputs_hash) not in _REUSE_LOGGED:
                    _REUSE_LOGGED.add((manifest, inputs_hash))
                    log.info("%s: reusing %s (%d utterances)", name, out_dir, info["utterances"])
                return manifest
            log.warning("%s: %d cached files missing (e.g. %s); re-rendering them", name, len(missing), missing[0])

    texts, terms = _read_inputs(inputs)
    skips = [sk for tf in (*texts.values(), *([terms] if terms else [])) for sk in tf.skips]
    for sk in skips[:5]:
        log.warning("skipped %s", sk.detail)
    voices = load_voices(inputs.voices)
    train_only, dev_control = texts.get("train_sentences"), texts.get("dev_control")
    sources = {"main": texts["sentences"].sources, "control": texts["control"].sources,
               "general": texts["general"].sources, "train_only": train_only.sources if train_only else [],
               "dev_control": dev_control.sources if dev_control else []}
    records = plan_corpus(texts["sentences"].texts, texts["control"].texts, voices, seed, max_sentences,
                          general=texts["general"].texts, sources=sources, voices_path=inputs.voices,
                          train_only=train_only.texts if train_only else None,
                          dev_control=dev_control.texts if dev_control else None)
    records += respelled_takes(records, terms.texts if terms else [], voices, respell[0], seed, respell[1])
    real, real_info = add_real_control(out_dir)
    planned = records + real
    check_read(planned, scope)  # before minutes of rendering
    not_read = left_out(planned, scope)
    records = [r for r in planned if in_scope(r.split, r.part, scope)]
    rendered = render_missing(records, out_dir, {v.id: v for v in voices}, seed, workers, progress, name)
    records = [replace(r, audio_path=str((out_dir / r.audio_path).resolve()),
                       duration=round(sf.info(out_dir / r.audio_path).duration, 3)) for r in records]

    write_text(manifest, "".join(json.dumps(r.to_manifest(), ensure_ascii=False) + "\n" for r in records))
    summary = _summary(records)
    info = {
        "name": name, "synthetic": True, "seed": seed, "max_sentences": max_sentences,
        "inputs_hash": inputs_hash, "input_files_sha256": files, "plan_version": PLAN_VERSION,
        **summary, "rendered": rendered, "reused": sum(1 for r in records if r.engine) - rendered,
        "real_control": real_info, "build_seconds": round(time.time() - t0, 1),
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if scope is not None:
        info |= {"scope": list(scope), "left_out": not_read}
    if inputs != CorpusInputs(name=name):  # the shipped files' corpus_info stays as it was
        info["inputs"] = {role: inputs.shown(p) for role, p in paths.items() if p}
        read = (*texts.items(), *((("terms", terms),) if terms else ()))
        info["text_lines"] = {role: {"kept": len(tf.lines), "skipped": len(tf.skips), "normalised": len(tf.normalised)}
                              for role, tf in read}
        # What the voices say where the file wrote digits or symbols (the reference is the spoken form).
        info["text_normalised"] = [{"source": x.source, "written": x.original, "spoken": x.text}
                                   for _, tf in read for x in tf.normalised]
        info["text_skips"] = [{"source": sk.source, "reason": sk.reason, "detail": sk.detail} for sk in skips]
    if terms is not None:
        write_text(out_dir / "terms.txt", "".join(t + "\n" for t in terms.texts))
        info["terms_file"] = str((out_dir / "terms.txt").resolve())
    write_json(info_path, info)
    msg = (f"{name}: {len(records)} utterances ({rendered} rendered) in {info['build_seconds']:.0f}s; "
           f"counts {summary['counts']}; hours {summary['hours']}")
    if not_read:
        msg += (f"; left out, as this run does not read them: {describe(not_read)} "
                "(data.render_all=true renders every part)")
    log.info(msg)  # once: the console handler shows it (it was also rich-printed, so it appeared twice)
    return manifest
