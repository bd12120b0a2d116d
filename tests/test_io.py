"""core.io: a result is replaced whole or not at all, even when the writer dies mid-write."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from asr_lora.core.io import atomic_dir, atomic_file, write_json, write_text


def _leftovers(d: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name not in keep)


def test_writer_killed_mid_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"wer": 0.1})
    # The child writes half of the new content, then dies without cleanup (as kill -9 or OOM would).
    code = textwrap.dedent(f"""
        import os
        from asr_lora.core.io import atomic_file
        with atomic_file({str(target)!r}) as tmp:
            with open(tmp, "w") as f:
                f.write('{{"wer": 0.')
                f.flush()
                os._exit(9)
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert target.read_text() == '{\n  "wer": 0.1\n}'
    write_text(target, "new")  # the next writer is not blocked by the dead one's leftovers
    assert target.read_text() == "new"


def test_error_inside_the_block_keeps_old_file_and_removes_temporary(tmp_path):
    target = tmp_path / "report.md"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path, {"report.md"}) == []


def test_directory_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "export" / "hf"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(target) as d:
            (d / "b.txt").write_text("2")
            raise ValueError("verification failed")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with atomic_dir(target) as d:
        (d / "c.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]
    assert _leftovers(target.parent, {"hf"}) == []
    assert oct(target.stat().st_mode & 0o777) == "0o755"
