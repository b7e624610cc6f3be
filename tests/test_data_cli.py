"""End-to-end tests of the `t2i_data` console script, run in a subprocess.

fastcore's `call_parse` parses `sys.argv` only when the decorated function is called from the top level of a file run
as `__main__` (which is what a console-script stub is), not from `python -c`. So the tests run a two-line stub file
that does exactly what the installed `t2i_data` entry point does."""
import json, os, subprocess, sys
from pathlib import Path

import pytest
from PIL import Image

from test_data import write_coco, write_cub

STUB = 'from t2i_nb.data import t2i_data\nt2i_data()\n'


@pytest.fixture
def run(tmp_path):
    stub = tmp_path / 't2i_data_stub.py'
    stub.write_text(STUB)
    def _run(*args, cwd=tmp_path):
        env = {**os.environ, 'OMP_NUM_THREADS': '1'}
        return subprocess.run([sys.executable, str(stub), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                              env=env, timeout=120)
    return _run


def _one_line_error(r):
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'Traceback' not in r.stderr, r.stderr
    return lines[0]


def test_help():
    # what `t2i_data --help` prints (in-process: each subprocess costs seconds of import time)
    from fastcore.script import anno_parser
    from t2i_nb.data import t2i_data
    text = ' '.join(anno_parser(t2i_data).format_help().split())   # argparse wraps at the terminal's width
    for flag in ('--make', '--out', '--n', '--size', '--seed', '--dataset', '--root', '--json', '--grid', '--split'):
        assert flag in text
    assert 'Data set to inspect' in text


def test_make_shapes_then_json(run, tmp_path):
    out = tmp_path / 'myshapes'
    r = run('--make', 'shapes', '--out', out, '--n', 20, '--size', 32, '--seed', 3, '--json', '--grid', tmp_path / 'g.png')
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / 'g.png').format == 'PNG'
    d = json.loads(r.stdout)
    assert d['dataset'] == 'shapes' and d['images'] == 20 and d['classes'] == 100 and not d['multi_label']
    assert set(d['splits']) == {'train', 'test'} and d['splits']['train']['images'] + d['splits']['test']['images'] == 20
    assert d['captions'] == 200 and (out / 'CUB_200_2011' / 'images.txt').exists()


def test_make_shapes_multi(tmp_path, capsys):
    from t2i_nb.data import t2i_data
    t2i_data(make='shapes-multi', out=str(tmp_path / 'multi'), n=12, size=32, json=True)
    d = json.loads(capsys.readouterr().out)
    assert d['multi_label'] and set(d['splits']) == {'train', 'val'} and d['images'] == 12


def test_cub_json_is_one_object(run, tmp_path):
    root = write_cub(tmp_path / 'birds')
    r = run('--dataset', 'cub', '--root', root, '--json', '--grid', tmp_path / 'grid.png', '--split', 'test')
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 1
    d = json.loads(r.stdout)
    assert (d['classes'], d['images'], d['captions']) == (4, 16, 160)
    assert d['splits']['train'] == {'images': 8, 'captions': 80, 'skipped': {}} and d['splits']['test']['images'] == 8
    assert Image.open(tmp_path / 'grid.png').format == 'PNG' and d['grid'] == str(tmp_path / 'grid.png')


def test_coco_text_output_warns_in_one_line(tmp_path, capsys):
    from t2i_nb.data import t2i_data
    root = write_coco(write_coco(tmp_path / 'coco', 'train'), 'val', n=4)
    t2i_data(dataset='coco', root=str(root))
    out, err = capsys.readouterr()
    assert 'coco at' in out and '(multi-label)' in out and 'train' in out
    assert err.strip().splitlines() == ['warning: coco train: skipped 1 (no captions)', 'warning: coco val: skipped 1 (no captions)']


def test_default_is_builtin_shapes(run, tmp_path):
    r = run('--json', '--grid', 'g.png')  # no data set: data/shapes under the working folder, made on first use
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d['dataset'] == 'shapes' and d['images'] == 2000 and Path(d['root']) == Path('data/shapes')
    assert (tmp_path / 'data' / 'shapes' / 'shapes_meta.json').exists() and (tmp_path / 'g.png').exists()


def test_bad_input_is_one_line(run):
    assert 'data set root nowhere not found; expected layout' in _one_line_error(run('--dataset', 'cub', '--root', 'nowhere'))


# The same function in-process (call_parse functions take keyword arguments): every other bad input, quickly.
@pytest.mark.parametrize('kw,match', [
    (dict(dataset='coco'), 'give its folder with --root'),
    (dict(make='circles'), "--make 'circles'"),
    (dict(make='shapes', dataset='coco'), 'disagree'),
    (dict(make='shapes', n=0), 'n'),
    (dict(dataset='shapes', root='.'), 'no built-in shapes set'),
    (dict(dataset='flowers', root='.'), 'jpg not found; expected layout'),
    (dict(dataset='coco', root='.'), 'annotations'),
    (dict(dataset='birds'), "unknown data set 'birds'"),
    (dict(dataset='cub', root='birds', json=True), 'train_test_split.txt not found'),
])
def test_bad_input_in_process(tmp_path, monkeypatch, capsys, kw, match):
    from t2i_nb.data import t2i_data
    monkeypatch.chdir(tmp_path)
    root = write_cub(tmp_path / 'birds')
    (root / 'CUB_200_2011' / 'train_test_split.txt').unlink()
    with pytest.raises(SystemExit) as e: t2i_data(**kw)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith('error: ') and match in err[0], err
