"""The training example runs and its two loss curves agree (it exits non-zero otherwise)."""
import pathlib
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_lm.py"


def test_train_lm_curves_agree(tmp_path):
    run = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "40", "--inplace-backward", "--plot",
                          str(tmp_path / "curves.png")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "max relative difference" in run.stdout
