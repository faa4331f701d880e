"""CLI basics: --help everywhere, `presets`, `export`, and one-line errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from more4d.camera import PRESET_NAMES
from more4d.cli import COMMANDS, main


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "export" in out and "presets" in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: more4d " + command in capsys.readouterr().out


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(PRESET_NAMES)
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # name + description


@pytest.mark.parametrize("fmt", ["ply", "glb", "txt"])
def test_export_writes_file(tmp_path, scene_file, capsys, fmt):
    out = tmp_path / f"out.{'glb' if fmt == 'glb' else 'zip'}"
    assert main(["export", scene_file, "--format", fmt, "--out", str(out)]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    if fmt != "glb":
        assert len(zipfile.ZipFile(out).namelist()) == 5


@pytest.mark.parametrize(("argv", "message"), [
    (["export", "missing.safetensors", "--format", "ply", "--out", "x.zip"], "does not exist"),
    (["export", "{scene}", "--format", "ply", "--out", "{tmp}/no/such/dir/x.zip"], "does not exist"),
])
def test_bad_paths_give_one_line_errors(tmp_path, scene_file, capsys, argv, message):
    argv = [a.format(scene=scene_file, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("more4d export: error:") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_module_entry_point_error_without_traceback(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_text("not a scene")
    proc = subprocess.run([sys.executable, "-m", "more4d", "export", str(bad), "-f", "glb", "-o", str(tmp_path / "x.glb")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "not a more4d scene file" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


EXAMPLE = str(Path(__file__).resolve().parent.parent / "assets" / "examples" / "example_1000042.png")


@pytest.mark.parametrize(("extra", "message"), [
    (["--weights", "{tmp}/tiny_wieghts"], "does not exist; check the path, or leave out --weights"),
    (["--render"], "--render needs a camera"),
    (["--camera-path", "{tmp}/bad.json"], "malformed"),
])
def test_generate_refused_before_any_work(tmp_path, capsys, extra, message):
    """User mistakes end in one line before the model runs, leave no --out folder, and never suggest writing
    random weights over a mistyped path."""
    (tmp_path / "bad.json").write_text('{"keyframes": [{"c2w": "oops"}]}')
    out = tmp_path / "out"
    argv = ["generate", EXAMPLE, "--prompt", "a ball moves left", "--out", str(out), *extra]
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "random" not in err and len(err.splitlines()) == 1
    assert not out.exists()
