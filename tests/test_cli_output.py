"""How commands talk to the user: one closing summary shape for every command, warnings as one line."""
from __future__ import annotations

import warnings

from landscape.cli import main, one_line_warnings
from landscape.commands._summary import summary_lines


def test_summary_lists_files_rows_details_and_failures(tmp_path):
    lines = summary_lines("slice", [(tmp_path / "a.parquet", 1632), tmp_path / "a.png"],
                          details=["16 samples"], failures=["e5.pt: shape mismatch"])
    assert lines == [f"landscape slice: wrote 2 file(s) to {tmp_path}",
                     f"  {tmp_path / 'a.parquet'}  (1,632 rows)",
                     f"  {tmp_path / 'a.png'}",
                     "landscape slice: 16 samples",
                     "landscape slice: 1 failure(s):",
                     "  e5.pt: shape mismatch"]
    assert summary_lines("plot", [tmp_path / "x" / "f.png", tmp_path / "y" / "g.png"])[0] == \
        f"landscape plot: wrote 2 file(s) to {tmp_path}"


def test_warnings_print_as_one_line_without_the_source_line(capsys):
    class TrajectoryWarning(UserWarning):
        pass

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = one_line_warnings("trajectory")
        warnings.warn("3 checkpoints share epoch 3\n(r_acc.pth.tar, r_pgd.pth.tar)", TrajectoryWarning)
    err = capsys.readouterr().err
    assert err == "landscape trajectory: warning: 3 checkpoints share epoch 3 [TrajectoryWarning]\n"


def test_cli_warning_display_is_scoped_to_the_command(tmp_path, capsys, monkeypatch):
    """A warning raised while a command runs is one line; Python's display is back afterwards."""
    import landscape.commands.diagnose as diag

    before = warnings.showwarning

    def noisy(args):
        warnings.warn("accuracies look like percentages", RuntimeWarning)
        return 0

    monkeypatch.setattr(diag, "run", noisy)
    assert main(["diagnose", str(tmp_path / "t.parquet")]) == 0
    err = capsys.readouterr().err
    assert err == "landscape diagnose: warning: accuracies look like percentages [RuntimeWarning]\n"
    assert warnings.showwarning is before
