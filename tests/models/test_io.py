"""plmkit.models.io: atomic writes."""
import pytest

from plmkit.models.io import atomic_write, atomic_write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "model.safetensors"
    atomic_write_text(target, "old")

    def dies(tmp):
        open(tmp, "w").write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "model.safetensors"
    (tmp_path / ".model.safetensors.abc123.tmp").write_text("a SIGKILLed save")  # no except clause ran
    (tmp_path / ".other.json.abc123.tmp").write_text("not ours")
    atomic_write_text(target, "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.abc123.tmp", "model.safetensors"]
