"""The hostile-input corpus (issue 16): every case gives its exit status, names the file or option at fault,
and changes no file that was there before; a refused command (exit 2) writes nothing at all."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.hostile import cases_bundles, cases_data2d, cases_data3d, cases_dicom, cases_runs  # noqa: F401  (they register the cases)
from tests.hostile.corpus import CASES, Case, Runs

pytestmark = pytest.mark.usefixtures("one_thread")


def checksums(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_corpus_is_large_and_its_cases_are_distinct():
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile_input(case: Case, runs: Runs, tmp_path: Path, capsys):
    argv = case.make(tmp_path, runs)
    shared = (runs.data2d, runs.run2d, runs.data3d, runs.run3d, runs.bundle2d)
    before = checksums(tmp_path, *shared)
    capsys.readouterr()
    run_cli(*argv, code=case.code)
    err = capsys.readouterr().err
    flat = "".join(err.split())  # rich wraps long lines anywhere, paths included
    assert "Traceback" not in err
    assert "".join(case.names.split()) in flat, f"the message does not name {case.names!r}:\n{err}"
    if case.says:
        assert "".join(case.says.split()) in flat, f"the message does not say {case.says!r}:\n{err}"
    if case.code == 2:
        assert "error" in err.lower()  # medseg's "error:" line, or typer's usage box for a malformed option
    after = checksums(tmp_path, *shared)
    changed = sorted(p for p in before if after.get(p) != before[p])
    assert not changed, f"files changed or removed: {changed}"
    if case.code == 2:  # a refused command writes nothing but the 3D preprocessing cache (the next run reuses it)
        assert [p for p in sorted(set(after) - set(before)) if "/preprocessed/" not in p] == [], "a refused command wrote files"
