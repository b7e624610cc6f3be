"""The `t2i_generate` console script: in-process calls for most cases, and two runs of a stub script in a subprocess.

fastcore's `call_parse` parses `sys.argv` only when the decorated function is called from the top level of a file run
as `__main__` (which is what a console-script stub is), so the end-to-end tests run a two-line stub file that does
exactly what the installed `t2i_generate` entry point does (one subprocess only: each costs seconds of imports)."""
import os, shutil, subprocess, sys
from pathlib import Path

import pytest
from PIL import Image

from t2i_nb.shapes import make_shapes
from t2i_nb.train import train
from t2i_nb.generate import t2i_generate, generate

from test_generate import tiny_config

STUB = 'from t2i_nb.generate import t2i_generate\nt2i_generate()\n'


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('gencli')
    root = make_shapes(tmp / 'shapes', n=80, size=32, seed=0)
    train(tiny_config(root), tmp / 'run', device='cpu', progress=False, log=lambda *a: None)
    return tmp / 'run'


def _stub_run(tmp_path, *args, cwd=None):
    stub = tmp_path / 't2i_generate_stub.py'
    stub.write_text(STUB)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'T2I_DEVICE': 'cpu'}
    return subprocess.run([sys.executable, str(stub), *map(str, args)], cwd=cwd or tmp_path, capture_output=True,
                          text=True, env=env, timeout=300)


def _one_line_error(err:str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'Traceback' not in err, err
    return lines[0]


def test_help():
    from fastcore.script import anno_parser
    text = ' '.join(anno_parser(t2i_generate).format_help().split())   # argparse wraps at the terminal's width
    for flag in ('captions', '--run', '--n', '--seed', '--out', '--truncation', '--device', '--bs', '--ncol'):
        assert flag in text
    assert 'newest run under ./runs' in text


def test_in_process_writes_the_grid(tiny_run, tmp_path, capsys):
    out = tmp_path / 'grid.png'
    t2i_generate(captions=['a large red star', 'a small blue circle'], run=str(tiny_run), n=3, seed=1, out=str(out), device='cpu')
    o = capsys.readouterr()
    assert f'wrote {out}: 2 caption(s) x 3 image(s)' in o.out and o.err == ''
    assert Image.open(out).size == generate(tiny_run, ['a large red star', 'a small blue circle'], n=3).grid().size


@pytest.mark.parametrize('captions, kw, msg', [
    ([], {}, 'give at least one caption'),
    (['a red star', ''], {}, 'caption 2 is empty'),
    (['zebra teapot'], {}, 'has no word in the vocabulary'),
    (['a red star'], {'truncation': -2.0}, 'truncation must be positive'),
    (['a red star'], {'run': 'nowhere/run'}, 'no run folder at nowhere/run'),
])
def test_in_process_bad_input_is_one_line(tiny_run, tmp_path, capsys, captions, kw, msg):
    with pytest.raises(SystemExit) as e:
        t2i_generate(captions=captions, **({'run': str(tiny_run)} | kw), out=str(tmp_path / 'x.png'), device='cpu')
    assert e.value.code == 2
    assert msg in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / 'x.png').exists()


def test_no_runs_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e: t2i_generate(captions=['a red star'])
    assert e.value.code == 2 and 'no trained run under runs/' in _one_line_error(capsys.readouterr().err)


def test_cli_newest_run_and_unknown_words(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / 'runs' / 'only')
    r = _stub_run(tmp_path, 'a large red star', 'a small teapot', '--n', 2, '--out', 'g.png')
    assert r.returncode == 0, r.stderr
    assert 'using the newest run: runs/only' in r.stderr
    assert 'unknown words drawn as the unknown token in "a small teapot": teapot' in r.stderr
    assert Image.open(tmp_path / 'g.png').format == 'PNG' and 'wrote g.png' in r.stdout

