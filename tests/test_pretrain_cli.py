"End-to-end tests of the `t2i_pretrain` console script (run as a subprocess, as a user would)."
import inspect, json, os, shutil, subprocess, sys, tempfile
import pytest
import torch
from t2i_nb.pretrain import PretrainConfig, RUN_FILES, t2i_pretrain
from t2i_nb.shapes import make_shapes

def run(*args, cwd=None):
    exe = shutil.which('t2i_pretrain')
    if exe: cmd = [exe, *args]
    else:  # not installed yet: a script file, so fastcore's call_parse sees a __main__ module and parses argv
        script = (cwd or tempfile.mkdtemp()) + '/_run_t2i_pretrain.py'
        with open(script, 'w') as f: f.write('from t2i_nb.pretrain import t2i_pretrain\nt2i_pretrain()\n')
        cmd = [sys.executable, script, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})

def test_default_dataset_end_to_end(tmp_path):
    "No data set argument: the built-in shapes set is made in ./data/shapes, trained on, scored and saved."
    r = run('--n_images', '60', '--image_size', '32', '--epochs', '1', '--bs', '8', '--scl', 'supcon',
            '--out', 'run', cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'data'/'shapes'/'shapes_meta.json').exists()
    assert {p.name for p in (tmp_path/'run').iterdir()} >= set(RUN_FILES)
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert 0 <= m['r_precision'] <= 1 and {'i2t_r1', 'i2t_r5', 'i2t_r10', 't2i_r1', 't2i_r5', 't2i_r10'} <= set(m)
    cfg = json.loads((tmp_path/'run'/'config.json').read_text())
    assert (cfg['scl'], cfg['image_encoder'], cfg['image_size']) == ('supcon', 'cnn', 32)
    assert 'epoch 1/1' in r.stdout and 'R-precision' in r.stdout and 'recall@1/5/10' in r.stdout
    sd = torch.load(tmp_path/'run'/'text_encoder.pth', weights_only=True)
    assert 'encoder.weight' in sd

def test_explicit_root_quiet_in_process(tmp_path, capsys, monkeypatch):
    "Called as a function (what the command runs): --root is used as is, nothing is made in ./data, --quiet prints the summary only."
    monkeypatch.chdir(tmp_path)
    root = make_shapes(tmp_path/'tiny', n=40, size=32, seed=1)
    t2i_pretrain(dataset='shapes', root=str(root), image_size=32, epochs=2, bs=8, out=str(tmp_path/'out'), quiet=True, valid_every=0)
    out = capsys.readouterr().out
    assert 'epoch' not in out and 'R-precision' in out
    hist = json.loads((tmp_path/'out'/'metrics.json').read_text())['history']   # --valid_every 0: validated after the last epoch only
    assert hist[0]['valid_loss'] is None and hist[1]['valid_loss'] is not None
    assert (tmp_path/'out'/'metrics.json').exists() and not (tmp_path/'data').exists()

@pytest.mark.parametrize('args, msg', [
    (['--dataset', 'mnist'], "unknown data set 'mnist'"),
    (['--dataset', 'cub', '--root', '/nonexistent/cub'], 'not found'),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, msg):
    r = run(*args, '--out', str(tmp_path/'o'), cwd=str(tmp_path))
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip().splitlines()
    assert err[-1].startswith('error: ') and msg in err[-1] and 'Traceback' not in r.stderr, r.stderr

@pytest.mark.parametrize('kw, msg', [
    (dict(scl='triplet'), "unknown --scl 'triplet'"),
    (dict(bs=7), '--bs must be even'),
    (dict(epochs=0), '--epochs must be at least 1'),
    (dict(image_encoder='vit'), "unknown --image_encoder 'vit'"),
    (dict(text_encoder='bert'), "unknown --text_encoder 'bert'"),
    (dict(dataset='coco'), 'give its folder with --root'),
    (dict(inception_weights='/nonexistent/w.pth'), '--inception_weights needs --image_encoder inception'),
    (dict(image_encoder='inception', inception_weights='/nonexistent/w.pth'), 'Inception-v3 weights not found'),
    (dict(lr=-1.), '--lr must be a positive number'),
    (dict(valid_every=-1), '--valid_every must be >= 0'),
    (dict(device='tpu'), 'unknown device'),
])
def test_bad_values_exit_2_in_process(tmp_path, capsys, monkeypatch, kw, msg):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e: t2i_pretrain(out=str(tmp_path/'o'), **kw)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith('error: ') and msg in err[-1], err
    assert not (tmp_path/'data').exists()                     # refused before any data work

def test_help():
    r = run('--help')
    assert r.returncode == 0 and '--scl' in r.stdout and '--inception_weights' in r.stdout

def test_cli_defaults_match_config():
    "The command's defaults are PretrainConfig's, so `t2i_pretrain` and `pretrain()` train the same thing."
    sig = inspect.signature(t2i_pretrain.__wrapped__ if hasattr(t2i_pretrain, '__wrapped__') else t2i_pretrain)
    defaults = PretrainConfig()
    for name, p in sig.parameters.items():
        if hasattr(defaults, name): assert p.default == getattr(defaults, name), name
