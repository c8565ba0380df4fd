from plmkit import demo


def test_demo_runs_on_real_minilm(minilm_dir, tmp_path, capsys):
    demo.main(["--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "loss =" in out and "sport" in out and "attends most to" in out
    assert (tmp_path / "attention.png").exists()
