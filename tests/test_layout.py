"""The package layout stays what docs/ARCHITECTURE.md draws: no import cycles, stages import only
earlier stages, modules readable in one sitting, entry points thin."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "asr_lora"
# Each subpackage may import only the ones listed (the data flow of ARCHITECTURE.md).
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "model": {"core", "data"},
    "inference": {"core", "data", "model"},
    "evaluation": {"core", "data", "model", "inference", "config"},
    "export": {"core", "data", "model", "inference", "evaluation", "config"},
    "training": {"core", "data", "model", "inference", "evaluation", "export", "config"},
    "serving": {"core", "data", "model", "inference"},
}
ENTRIES = {"train", "evaluate", "export.__main__", "transcribe", "prepare", "compare", "serve"}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        name = ".".join(f.relative_to(PKG).with_suffix("").parts)
        out[name.removesuffix(".__init__") if name != "__init__" else ""] = f
    return out


def _imports(path: Path, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else ast.walk(tree)
    found = set()
    for n in nodes:
        if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("asr_lora"):
            found |= {f"{n.module}.{a.name}" for a in n.names} | {n.module}
        elif isinstance(n, ast.Import):
            found |= {a.name for a in n.names if a.name.startswith("asr_lora")}
    return {f.removeprefix("asr_lora").lstrip(".") for f in found}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state, cycles = {}, []

    def visit(u, stack):
        state[u] = 1
        stack.append(u)
        for v in graph[u]:
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
    return cycles


def test_no_import_cycles_between_modules():
    mods = _modules()
    for module_level_only in (True, False):  # lazy imports inside functions count too
        graph = {m: {d for d in _imports(f, module_level_only) if d in mods and d != m} for m, f in mods.items()}
        assert _cycles(graph) == [], f"import cycle (module_level_only={module_level_only})"


def test_subpackages_import_only_earlier_stages():
    bad = []
    for name, f in _modules().items():
        pkg = name.split(".")[0]
        if pkg not in ALLOWED:
            continue
        for dep in _imports(f, module_level_only=False):
            top = dep.split(".")[0]
            if top and top != pkg and top not in ALLOWED[pkg]:
                bad.append(f"{name} imports {dep}")
    assert bad == []


def test_modules_are_small_and_entry_points_thin():
    mods = _modules()
    long = {n: len(f.read_text().splitlines()) for n, f in mods.items() if len(f.read_text().splitlines()) > MAX_LINES}
    assert long == {}
    for entry in ENTRIES:
        tree = ast.parse(mods[entry].read_text())
        funcs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert set(funcs) <= {"main", "parse_args"}, (entry, funcs)
        assert len(mods[entry].read_text().splitlines()) <= 100, entry


def test_every_subpackage_says_what_it_owns():
    for name, f in _modules().items():
        if f.name == "__init__.py" and name:
            doc = ast.get_docstring(ast.parse(f.read_text()))
            assert doc and len(doc) > 80, f"{f} needs a docstring saying what the subpackage owns"


# The modules that read the Hydra config; everything below them takes explicit arguments (plain
# values, or the one config section it owns, e.g. the data pipeline the `data` section).
JOBS = {"config", "train", "evaluate", "prepare", "serve", "transcribe", "compare", "export.__main__",
        "training.job", "evaluation.job", "export.job"}
ROOT_ONLY = {"paths", "logger", "recipe_name", "run_dir"}  # keys only the root config has


def _config_readers(paths: dict[str, Path]) -> dict[str, set[str]]:
    """Modules that take the root config: a name `cfg`, or a read of a key only the root has."""
    found: dict[str, set[str]] = {}
    for name, f in paths.items():
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.Name) and n.id == "cfg" or isinstance(n, ast.arg) and n.arg == "cfg":
                found.setdefault(name, set()).add("cfg")
            elif isinstance(n, ast.Attribute) and n.attr in ROOT_ONLY and isinstance(n.value, ast.Name):
                found.setdefault(name, set()).add(f"{n.value.id}.{n.attr}")
    return found


def test_only_job_modules_read_the_config():
    assert {m: sorted(v) for m, v in _config_readers(_modules()).items() if m not in JOBS} == {}


def test_config_check_sees_a_library_function_taking_the_config(tmp_path):
    rogue = tmp_path / "rogue.py"
    rogue.write_text("def f(cfg):\n    return cfg.data.path\n\ndef g(c):\n    return c.paths.cache_dir\n")
    assert _config_readers({"rogue": rogue}) == {"rogue": {"cfg", "c.paths"}}


DECODER = "inference.decode"  # the one module that builds `generate` calls


def _generate_callers(paths: dict[str, Path]) -> set[str]:
    callers = set()
    for name, f in paths.items():
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "generate":
                callers.add(name)
    return callers


def test_only_the_decode_module_calls_generate():
    assert _generate_callers(_modules()) == {DECODER}


def test_generate_check_sees_a_second_caller(tmp_path):
    rogue = tmp_path / "rogue.py"
    rogue.write_text("def f(model, x):\n    return model.generate(input_features=x)\n")
    assert _generate_callers({**_modules(), "rogue": rogue}) == {DECODER, "rogue"}


def test_hydra_entry_points_load_no_model_stack_before_the_command_runs():
    # Hydra parses the command line (and a refused +recipe, --help or --cfg answers) before main runs:
    # importing torch and transformers first would keep the user waiting seconds for that answer.
    import subprocess
    import sys

    code = ("import sys, asr_lora.train, asr_lora.evaluate, asr_lora.prepare, asr_lora.export; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
