"""Client-given paths stay inside the configured roots: no `..`, no escape through a symlink."""

import pytest

from services.trainer.paths import job_dir
from shared.paths import confine, input_roots


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "inputs"
    (root / "models" / "teacher").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    return root


def test_inside_is_resolved(root):
    assert confine(root / "models" / "teacher", [root]) == (root / "models" / "teacher").resolve()
    assert confine(str(root), [root]) == root.resolve()
    assert confine(root / "not-yet-there", [root]) == (root / "not-yet-there").resolve()


def test_relative_paths_are_taken_from_the_working_directory(root, monkeypatch):
    monkeypatch.chdir(root.parent)
    assert confine("inputs/models", [root]) == (root / "models").resolve()
    with pytest.raises(ValueError, match="outside"):
        confine("secret", [root])


@pytest.mark.parametrize("bad", ["../secret", "models/../../secret", "models/.."])
def test_dot_dot_is_refused_even_when_it_stays_inside(root, bad):
    with pytest.raises(ValueError, match=r"'\.\.'"):
        confine(root / bad, [root])


def test_outside_is_refused(root, tmp_path):
    for bad in (tmp_path / "secret", "/etc/passwd", tmp_path / "inputs-sibling"):
        with pytest.raises(ValueError, match="outside"):
            confine(bad, [root])


def test_symlink_out_of_the_root_is_refused(root, tmp_path):
    (root / "models" / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(ValueError, match="outside"):
        confine(root / "models" / "link", [root])
    (root / "models" / "inner").symlink_to(root / "models" / "teacher")
    assert confine(root / "models" / "inner", [root]) == (root / "models" / "teacher").resolve()


def test_nul_byte_is_refused(root):
    with pytest.raises(ValueError):
        confine(f"{root}/a\0b", [root])


def test_jobs_read_from_input_roots_and_artifacts_and_write_under_their_own_folder(sqlite_settings):
    assert input_roots(sqlite_settings) == [*sqlite_settings.input_roots, sqlite_settings.artifacts_root]
    folder = job_dir(sqlite_settings, "abc")
    assert folder.is_absolute() and folder.parent == sqlite_settings.artifacts_root.resolve()
