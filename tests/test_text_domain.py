"""Adapt from text alone: a sentence file in (`data=synthetic data.sentences=PATH`), an adapter and a
term report out. A fixture domain of invented product names goes through prepare -> train ->
evaluate, and every kind of bad input gets an error naming the file and line or a recorded skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from asr_lora.config import CONF_DIR
from asr_lora.data.splits import training_text
from asr_lora.data.synthetic.corpus import CorpusInputs, build_corpus, check_split_sizes, info_of
from asr_lora.data.synthetic.sentences import check_terms, read_sentences, sentence_key, speakable
from asr_lora.data.synthetic.voices import VOICES

PRODUCTS = ["Zorvex", "Quillamine", "Bravoset", "Plinthor", "Duskala", "Merovane", "Tyrabex", "Kelvora",
            "Fennix", "Gloamite", "Virellan", "Oxtavo", "Sundrel", "Cambrax", "Lumidor"]
TEMPLATES = ["Please restock the {} before the weekend sale.", "The new {} cartridge arrived this morning.",
             "Customers keep asking whether {} works without a network.", "Our team shipped a quieter {} last week."]
CONTROL = ["The library opens at nine on weekdays.", "She painted the fence a pale shade of green.",
           "We walked along the river until the sun went down.", "The train was late because of the storm.",
           "He keeps his old letters in a wooden box.", "Fresh bread smells wonderful in the morning.",
           "The children built a castle out of sand.", "A light rain fell over the quiet town.",
           "They bought two tickets for the evening show."]
GENERAL = ["My neighbour grows tomatoes in her garden.", "The museum closes early on public holidays.",
           "He fixed the bicycle chain with a small tool.", "We need more chairs for the meeting room."]
# One voice per role keeps rendering short: train (espeak), and dev/test in each held-out part.
FIXTURE_VOICES = ["espeak-en-us-m1", "espeak-en-gb-f2", "espeak-en-us-klatt", "espeak-en-gb-m4", "pico-en-us",
                  "piper-joe-dev", "espeak-en-us-m5", "mbrola-us1", "piper-joe"]


def write_domain(root: Path, extra_lines: list[str] = ()) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    lines = [t.format(p) for p in PRODUCTS for t in TEMPLATES]  # 60 sentences, each name in four contexts
    files = {"sentences": root / "products.txt", "control": root / "control.txt", "general": root / "general.txt",
             "terms": root / "terms.txt", "voices": root / "voices.json"}
    files["sentences"].write_text("# product support phrases\n" + "\n".join([*lines, *extra_lines]) + "\n")
    files["control"].write_text("\n".join(CONTROL) + "\n")
    files["general"].write_text("\n".join(GENERAL) + "\n")
    files["terms"].write_text("\n".join(PRODUCTS) + "\n")
    shipped = json.loads(VOICES.read_text())["voices"]
    files["voices"].write_text(json.dumps({"voices": [v for v in shipped if v["id"] in FIXTURE_VOICES]}))
    return files


# ---- bad input: an error naming the file (and line), or a recorded skip with its reason ----

def test_unreadable_sentence_files_stop_with_the_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.sentences: no such file: .*nope.txt"):
        read_sentences(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(ValueError, match=r"data.sentences=.*empty.txt: no usable sentence"):
        read_sentences(empty)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Order the Zorvex refill today please.\nThe caf\xe9 sells Zorvex now.\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt:2: not UTF-8"):
        read_sentences(latin1)


def test_lines_no_voice_can_say_are_normalised_or_skipped_with_their_reason(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("\n".join([
        "The Zorvex refill costs S$4.50 at every branch.",   # 1 money -> words
        "Sales rose 5% on the 3rd day of the launch.",        # 2 percent, ordinal -> words
        "See www.zorvex.example.com for the manual today.",   # 3 url
        "Write to help@zorvex.sg for a replacement part.",     # 4 email
        "The Zorvex ~ Quillamine bundle ships soon.",          # 5 a symbol with no rule
        "Zorvex works.",                                        # 6 too short
        " ".join(["word"] * 41),                                # 7 too long
        "the zorvex refill costs S$4.50 at every branch",     # 8 duplicate of 1 after normalisation
    ]) + "\n")
    out = read_sentences(f)
    assert out.texts == ["The Zorvex refill costs four dollars fifty cents at every branch.",
                         "Sales rose five percent on the third day of the launch."]
    assert out.sources == [f"{f}:1", f"{f}:2"] and len(out.normalised) == 2
    assert [(s.source.rsplit(":", 1)[1], s.reason) for s in out.skips] == [
        ("3", "url"), ("4", "email"), ("5", "unspeakable"), ("6", "too_short"), ("7", "too_long"), ("8", "duplicate")]
    assert "repeats line 1" in out.skips[-1].detail and "'~'" in out.skips[2].detail


def test_terms_that_never_occur_are_skipped_and_a_file_of_none_is_an_error(tmp_path):
    f = tmp_path / "terms.txt"
    f.write_text("Zorvex\nNebulor\nzorvex\n")
    out = check_terms(f, ["Restock the Zorvex today please."])
    assert out.texts == ["Zorvex"]
    assert [(s.reason, s.source) for s in out.skips] == [("term_not_in_sentences", f"{f}:2"), ("duplicate", f"{f}:3")]
    # Terms as the scoring normaliser spells them (a run's eval/terms.txt) occur too.
    f.write_text("kopio\nomelet\n")
    assert check_terms(f, ["One kopi-o and an omelette lah."]).texts == ["kopio", "omelet"]
    f.write_text("omelette\n")  # and a term spelt otherwise than the sentence, the same once normalised
    assert check_terms(f, ["One omelet lah."]).texts == ["omelette"]
    f.write_text("Nebulor\n")
    with pytest.raises(ValueError, match="no usable term.*Nebulor.*occurs in no sentence"):
        check_terms(f, ["Restock the Zorvex today please."])


def test_too_few_sentences_stop_with_the_numbers_needed():
    with pytest.raises(ValueError, match=r"20 usable domain sentences.*need at least 31 domain sentences"):
        check_split_sizes(20, 30)
    with pytest.raises(ValueError, match=r"and 3 control sentences"):
        check_split_sizes(60, 2)
    check_split_sizes(31, 3)


def test_a_corpus_of_too_few_sentences_is_refused_before_rendering(tmp_path):
    files = write_domain(tmp_path / "domain")
    files["sentences"].write_text("\n".join(TEMPLATES[0].format(p) for p in PRODUCTS[:12]) + "\n")
    inputs = CorpusInputs.of("tiny", *(files[k] for k in ("sentences", "control", "general", "voices")))
    with pytest.raises(ValueError, match=r"12 usable domain sentences.*need at least 31"):
        build_corpus(tmp_path / "out", progress=False, inputs=inputs)
    assert not (tmp_path / "out" / "audio").exists()


def test_train_only_sentences_that_repeat_a_scored_sentence_stop_before_rendering(tmp_path):
    files = write_domain(tmp_path / "domain")
    more = tmp_path / "domain" / "more.txt"
    more.write_text("Customers ask for the Zorvex by name now.\n" + TEMPLATES[1].format(PRODUCTS[2]).upper() + "\n")
    inputs = CorpusInputs.of("tiny", *(files[k] for k in ("sentences", "control", "general", "voices")),
                             train_sentences=more)
    with pytest.raises(ValueError, match=rf"{more}:2: train-only sentence repeats the main sentence at "
                                         rf"{files['sentences']}:11 "):
        build_corpus(tmp_path / "out", progress=False, inputs=inputs)
    assert not (tmp_path / "out" / "audio").exists()


def test_speakable_leaves_plain_text_alone():
    assert speakable("Restock the Zorvex, please!") == ("Restock the Zorvex, please!", "")


@pytest.mark.parametrize("written, spoken", [
    # Brackets read as pauses: the label keeps the aside the voices say (the normaliser drops "(...)").
    ("Take Velorin (a beta blocker) twice a day.", "Take Velorin, a beta blocker, twice a day."),
    ("Take the Zorvex daily (with food).", "Take the Zorvex daily, with food."),
    ("(New) Zorvex refills [in blue] ship today.", "New, Zorvex refills, in blue, ship today."),
    # Money, thousands, ordinals and decimals as said.
    ("The new plant cost $2.5 million to build.", "The new plant cost two point five million dollars to build."),
    ("The new plant cost $3bn to build.", "The new plant cost three billion dollars to build."),
    ("The refill costs $1.01 today.", "The refill costs one dollar one cent today."),
    ("The refill costs $0.50 today.", "The refill costs fifty cents today."),
    ("The refill costs $2.00 today.", "The refill costs two dollars today."),
    ("The 1,000th customer wins a Zorvex.", "The one thousandth customer wins a Zorvex."),
    ("Take 2.50 mg of Velorin.", "Take two point five zero mg of Velorin."),
    ("The ratio is 1.10 today.", "The ratio is one point one zero today."),
    ("Sales rose 2.5% this week.", "Sales rose two point five percent this week."),
    # Typographic punctuation, as word processors write it.
    ("It\u2019s the \u201cnew\u201d Zorvex \u2013 really\u2026", 'It\'s the "new" Zorvex, really...'),
    ("The Zorvex\u2014our best seller\u2014is back.", "The Zorvex, our best seller, is back."),
    ("Pages 10\u201320 cover the Zorvex.", "Pages ten to twenty cover the Zorvex."),
    # A number glued to its unit.
    ("Take 10mg of Velorin at 3pm.", "Take ten mg of Velorin at three pm."),
    ("We ran 5km before the 2nd sale.", "We ran five km before the second sale."),
    # Letters glued to digits, clock times, ratios and dotted versions.
    ("Print the Zorvex leaflet on A4 paper.", "Print the Zorvex leaflet on A four paper."),
    ("The MP3 file names the Zorvex.", "The MP three file names the Zorvex."),
    ("Take Velorin at 9:05am and 10:30.", "Take Velorin at nine oh five am and ten thirty."),
    ("The clinic opens at 10:00 today.", "The clinic opens at ten o'clock today."),
    ("Mix it in a 3:1 ratio.", "Mix it in a three to one ratio."),
    ("Update the Zorvex app to 1.2.3 today.", "Update the Zorvex app to one point two point three today."),
    # A spaced hyphen is a dash, one before a number a minus sign, one between short numbers a range.
    ("Take the Zorvex - it works - twice.", "Take the Zorvex, it works, twice."),
    ("It fell to -5 degrees overnight.", "It fell to minus five degrees overnight."),
    ("Take 2-3 tablets of Velorin.", "Take two to three tablets of Velorin."),
    ("The COVID-19 ward takes Zorvex.", "The COVID-nineteen ward takes Zorvex."),
    # Singapore's "6.30pm", decades, a leading decimal point, a code with a leading zero, midnight.
    ("The clinic closes at 6.30pm today.", "The clinic closes at six thirty pm today."),
    ("Zorvex was big in the 1990s.", "Zorvex was big in the nineteen nineties."),
    ("Take .5 mg of Velorin.", "Take point five mg of Velorin."),
    ("Ask for batch 007 of Zorvex.", "Ask for batch zero zero seven of Zorvex."),
    ("The ward shuts at 24:00 sharp.", "The ward shuts at twenty-four o'clock sharp."),
    # Invisible characters inside a word join it.
    ("The Zor\u00advex refill is\u200b ready.", "The Zorvex refill is ready."),
])
def test_speakable_writes_what_the_voices_say_and_the_label_keeps_it(written, spoken):
    assert speakable(written) == (spoken, "")
    assert training_text(spoken) == spoken  # the label the model learns is what the voice said


@pytest.mark.parametrize("written", ["The refill costs $1,00 today.", "Read pages 1,5 of the Zorvex leaflet."])
def test_a_comma_inside_a_number_that_is_not_a_thousands_separator_is_not_guessed_at(written):
    # A decimal comma or a list: the line is skipped with the number named, not read as "one,zero".
    text, reason = speakable(written)
    assert text is None and reason.startswith("unspeakable: number '1,")


@pytest.mark.parametrize("written, number", [
    ("Call 555-0199 about the Zorvex.", "555-0199"), ("Mix it 1:1:1 with water.", "1:1:1"),
])
def test_a_number_no_rule_reads_is_skipped_naming_it(written, number):
    assert speakable(written) == (None, f"unspeakable: number {number!r}")


def test_a_number_too_large_to_read_is_skipped_not_a_crash():
    assert speakable("The Zorvex count is " + "9" * 400 + " today.") == (
        None, "unspeakable: a number too large to read")


def test_sentences_the_scorer_cannot_tell_apart_are_one_sentence(tmp_path):
    """Two spellings of one scored sentence ("colour"/"color", "kopi-o"/"kopio") would put the
    same reference in train and test."""
    f = tmp_path / "s.txt"
    f.write_text("The colour of the Zorvex cap is blue.\nThe color of the Zorvex cap is blue.\n"
                 "One kopi-o for the Zorvex team.\nOne kopio for the Zorvex team.\n")
    out = read_sentences(f)
    assert len(out.lines) == 2
    assert [(s.reason, s.source) for s in out.skips] == [("duplicate", f"{f}:2"), ("duplicate", f"{f}:4")]


def test_terms_the_scorer_reads_as_one_are_one_term_and_digits_are_matched_as_said(tmp_path):
    terms = tmp_path / "terms.txt"
    terms.write_text("kopi-o\nkopio\nA4\nB52\n")
    found = check_terms(terms, [speakable("One kopi-o please.")[0], speakable("Print it on A4 paper.")[0]])
    assert found.texts == ["kopi-o", "A four"]  # the term as the references hold it
    assert [(s.source, s.reason) for s in found.skips] == [
        (f"{terms}:2", "duplicate"), (f"{terms}:4", "term_not_in_sentences")]  # "B52" is not "a" nor "b"


@pytest.mark.parametrize("a, b, same", [
    ("Dr M\u00fcller arrived today.", "Dr M\u00f6ller arrived today.", False),
    ("Dr M\u00fcller arrived today.", "dr M\u00dcLLER arrived today", True),
    ("The Stra\u00dfe is closed now.", "the STRASSE is closed now", True),
    ("Kopi \u00e0 la carte lah.", "Kopi a la carte lah.", False),
    ("It\u2019s the new Zorvex.", "its the new zorvex", False),
])
def test_sentence_key_tells_letters_of_any_script_apart(a, b, same):
    assert (sentence_key(a) == sentence_key(b)) is same


def test_names_that_differ_in_one_accented_letter_are_two_sentences_and_two_terms(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("Dr M\u00fcller arrived this morning.\nDr M\u00f6ller arrived this morning.\n")
    out = read_sentences(f)
    assert len(out.lines) == 2 and not out.skips
    terms = tmp_path / "terms.txt"
    terms.write_text("M\u00fcller\nM\u00f6ller\n")
    found = check_terms(terms, ["Dr M\u00fcller arrived this morning."])
    assert found.texts == ["M\u00fcller"] and [s.reason for s in found.skips] == ["term_not_in_sentences"]


# ---- the fixture domain end to end ----

def _cfg(tmp_path: Path, files: dict[str, Path], *extra: str, model: str | None = None, recipe: bool = True):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[
            *(["+recipe=sg_english"] if recipe else []), "data=synthetic",
            *(f"data.{role}={p}" for role, p in files.items()),
            f"paths.cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}", "logger=none",
            *([f"model.name_or_path={model}"] if model else []), *extra])


def test_the_documented_command_composes_the_synthetic_source_over_the_recipe(tmp_path):
    files = write_domain(tmp_path / "domain")
    cfg = _cfg(tmp_path, {"sentences": files["sentences"]})
    assert cfg.data.source == "synthetic" and cfg.data.sentences == str(files["sentences"])
    assert cfg.data.synthetic and cfg.recipe_name == "sg_english"
    assert cfg.data.control is None  # the shipped general/control English unless given
    shipped = CorpusInputs.of(cfg.data.name, cfg.data.sentences, cfg.data.control, cfg.data.general)
    assert shipped.control == CorpusInputs().control and shipped.general == CorpusInputs().general


def test_fixture_domain_prepare_train_evaluate(tmp_path, tiny_whisper_dir):
    from asr_lora import prepare
    from asr_lora.evaluation.job import evaluate
    from asr_lora.training.job import train

    long_line = "The " + " ".join(["Zorvex"] * 30) + " line is a label far past the limit."
    files = write_domain(tmp_path / "domain", extra_lines=[
        "Call 555 0199 for the Zorvex recall.", "Visit https://zorvex.example.com today.", long_line])
    files["terms"].write_text("\n".join([*PRODUCTS, "Nebulor"]) + "\n")
    files["train_sentences"] = tmp_path / "domain" / "more.txt"
    files["train_sentences"].write_text("\n".join(f"Our {p} order came in two boxes today." for p in PRODUCTS[:4]))
    small = ["lora.scope=[decoder_self,decoder_cross]", "lora.r=4", "lora.alpha=8", "train.max_steps=3",
             "train.eval_steps=3", "train.save_steps=3", "train.warmup_steps=0", "train.dev_eval_max_samples=4",
             "train.per_device_train_batch_size=4", "train.encoder_context=full", "eval.n_bootstrap=20",
             "eval.max_new_tokens=6", "eval.beam_size=1", "export.enabled=false", "data.max_label_tokens=40"]
    cfg = _cfg(tmp_path, files, *small, model=str(tiny_whisper_dir))

    prepare.main(cfg)
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    skips = {(s["reason"], s["source"].rsplit(":", 1)[-1]) for s in report["counts"]["skips"]}
    sentences = files["sentences"]
    # Line 1 is a comment; the product lines are 2-61, then the three extra lines.
    assert ("url", "63") in skips and ("term_not_in_sentences", "16") in skips
    assert any(r == "label_too_long" for r, _ in skips)  # the long line: rendered, then dropped by label length
    assert report["counts"]["seen"] == report["counts"]["kept"] + report["counts"]["skipped"]
    info = report["corpus"]
    assert info["text_lines"]["sentences"] == {"kept": 62, "skipped": 1, "normalised": 1}
    assert info["inputs"]["sentences"] == str(sentences)
    assert set(info["parts"]["test"]) >= {"neural/main", "unseen_engine/main", "seen_engine/main"}
    kept_terms = Path(info["terms_file"]).read_text().split()
    assert kept_terms == PRODUCTS
    assert info["text_lines"]["train_sentences"] == {"kept": 4, "skipped": 0, "normalised": 0}
    extra = [json.loads(line) for line in Path(report["manifest"]).read_text().splitlines() if "two boxes" in line]
    assert len(extra) == 8 and {(r["split"], r["subset"]) for r in extra} == {("train", "main")}

    summary = train(cfg)
    run = tmp_path / "run"
    ev = json.loads((run / "eval" / "eval.json").read_text())
    assert ev["synthetic"] is True and ev["terms"]["source"].endswith("terms.txt")
    assert set(ev["systems"]) >= {"base", "prompt", "adapted"}
    assert ev["terms"]["n_terms"] == len(PRODUCTS)
    html = (run / "eval" / "report.html").read_text()
    assert "SYNTHETIC speech: products sentences" in html
    assert "ASR evaluation: products" in html  # named after the sentence file
    assert summary["train"]["steps"] == 3 and (run / "adapter" / "adapter_model.safetensors").is_file()

    ev_cfg = _cfg(tmp_path, files, *small, f"adapter={run / 'adapter'}", f"run_dir={tmp_path / 'eval_run'}",
                  model=str(tiny_whisper_dir))
    again = evaluate(ev_cfg)
    assert again["systems"]["adapted"]["wer"]["norm"]["wer"] == pytest.approx(
        ev["systems"]["adapted"]["wer"]["norm"]["wer"])
    # lora.scale=0 scores the adapter with its update scaled away: the decoded weights are the base's.
    zero = evaluate(_cfg(tmp_path, files, *small, f"adapter={run / 'adapter'}", "lora.scale=0.0",
                         f"run_dir={tmp_path / 'eval_zero'}", model=str(tiny_whisper_dir)))
    from transformers import WhisperForConditionalGeneration

    from asr_lora.model.lora import merged_weights_digest

    assert zero["model"]["scale"] == 0.0 and zero["model"]["lora"]["lora_alpha"] == 0.0
    base_digest = merged_weights_digest(WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir))
    assert zero["adapted_weights"]["sha256"] == base_digest != ev["adapted_weights"]["sha256"]

    # The same text reuses its audio; one changed line renders only that line's clips.
    corpus_dir = Path(info["terms_file"]).parent
    files["sentences"].write_text(files["sentences"].read_text().replace(
        "Please restock the Zorvex before the weekend sale.", "Please restock the Zorvex before noon."))
    from asr_lora.data.synthetic.corpus import CorpusInputs as Inputs

    inputs = Inputs.of("synthetic", *(files[k] for k in ("sentences", "control", "general", "voices", "terms")))
    manifest = build_corpus(corpus_dir, progress=False, inputs=inputs, scope=tuple(info["scope"]))  # as the run
    rebuilt = json.loads(info_of(manifest).read_text())
    per_sentence = sum(1 for r in map(json.loads, manifest.read_text().splitlines())
                       if r["text"].startswith("Please restock the Zorvex"))
    assert 0 < rebuilt["rendered"] == per_sentence


@pytest.mark.slow
def test_fixture_domain_on_real_tiny_en_beats_the_prompt_baseline_on_unseen_voices(tmp_path):
    """Real tiny.en, the recipe's prompt training, shortened: decoded with the term prompt, the
    adapter transcribes the unseen-voice test parts (a neural voice, concatenative engines) with
    fewer errors than the prompt alone, and without the prompt hears the product names more often
    than the prompt baseline does."""
    from asr_lora.training.job import train

    files = write_domain(tmp_path / "domain")
    # 64 steps of 4 clips, a minute less than the recipe's 8, scored greedily (the recipe's beam 5 is
    # test_train_e2e's): the adapter recalls 17 of the 18 occurrences, the prompt 11 (at beam 5, 17 or
    # 18 against 15 over seeds 42 and 2)
    cfg = _cfg(tmp_path, files, "train.max_steps=64", "train.per_device_train_batch_size=4",
               "train.dev_eval_max_samples=0", "export.enabled=false", "eval.part=[neural,unseen_engine]",
               "eval.n_bootstrap=50", "eval.beam_size=1")
    train(cfg)
    ev = json.loads((tmp_path / "run" / "eval" / "eval.json").read_text())
    systems = ev["systems"]

    def pooled(system, what):
        parts = systems[system]["parts"]
        if what == "wer":
            errors = sum(p["wer"]["sub"] + p["wer"]["del"] + p["wer"]["ins"] for p in parts.values())
            return errors / sum(p["wer"]["n_ref_words"] for p in parts.values())
        return sum(p["terms"]["hits"] for p in parts.values()) / sum(p["terms"]["n"] for p in parts.values())

    assert set(systems["prompt"]["parts"]) == {"neural", "unseen_engine"}
    assert pooled("adapted_prompt", "wer") < pooled("prompt", "wer")
    assert pooled("adapted", "terms") > pooled("prompt", "terms") > pooled("base", "terms")


def test_the_shipped_drug_name_example_reads_whole():
    # README's "Adapt from your own text" example: every line kept, each name in eight sentences.
    import re
    from collections import Counter

    from asr_lora.config import REPO_ROOT

    text = read_sentences(REPO_ROOT / "data" / "examples" / "drug_names.txt")
    assert len(text.lines) == 200 and not text.skips
    names = Counter(n for line in text.lines for n in re.findall(r"\b[A-Z][a-z]{5,}\b", line.text)
                    if n not in {"Please", "Switch", "Night", "Write", "Tuesday"})
    assert len(names) == 25 and set(names.values()) == {8}
    check_split_sizes(len(text.lines), 3)
