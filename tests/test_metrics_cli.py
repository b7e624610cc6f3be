"End-to-end tests of the `t2i_eval` console script on a tiny run folder built with t2i_nb.train."
import json, os, shutil, subprocess, sys, tempfile
import pytest

TINY_EVAL = ['--evaluator_width', '4', '--evaluator_epochs', '1', '--evaluator_extra', '40']


_SCRIPT_DIR = tempfile.mkdtemp()

def run(*args, timeout=300):
    exe = shutil.which('t2i_eval')
    if exe: cmd = [exe, *args]
    else:  # not installed yet: a script file, so fastcore's call_parse sees a __main__ module and parses argv
        script = os.path.join(_SCRIPT_DIR, '_run_t2i_eval.py')
        with open(script, 'w') as f: f.write('from t2i_nb.metrics import t2i_eval\nt2i_eval()\n')
        cmd = [sys.executable, script, *args]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'T2I_DEVICE': 'cpu'}
    env.pop('T2I_FID_WEIGHTS', None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    import torch
    torch.set_num_threads(1)
    from t2i_nb.shapes import make_shapes
    from t2i_nb.train import TrainConfig, train
    from t2i_nb.pretrain import pretrain, PretrainConfig
    from t2i_nb.models import GANConfig
    from t2i_nb.encoders import TextEmbedConfig
    from t2i_nb.gan import T2IConfig
    d = tmp_path_factory.mktemp('eval')
    root = make_shapes(d/'shapes', n=120, size=32, seed=0)
    cfg = TrainConfig(dataset='shapes', root=str(root), bs=8, steps=2, ckpt_every=0, n_samples=4, precision='fp32',
                      net=T2IConfig(text='dte', gan=GANConfig(img_size=32, nf=8, z_dim=16, cond_dim=32),
                                    dte=TextEmbedConfig(ninput=16, nhidden=32)))
    train(cfg, d/'run', device='cpu', progress=False, log=lambda *a: None)
    enc = pretrain(PretrainConfig(root=str(root), image_size=32, nef=32, bs=16, epochs=1), out=d/'enc',
                   progress=False, log=lambda *a: None).out
    return d/'run', enc


def test_eval_json_and_files(tiny_run):
    run_dir, enc = tiny_run
    r = run(str(run_dir), '--n_samples', '12', '--bs', '6', '--json', '--encoders', str(enc), *TINY_EVAL)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res['n_samples'] == 12 and res['image_metrics']['evaluator']['n_fake'] == 12
    assert (res['backbone'], res['text']) == ('dfgan', 'dte') and res['step'] == 2 and res['img_size'] == 32
    assert 0 <= res['r_precision']['generated'] <= 1 and res['r_precision']['encoders'] == str(enc)
    assert set(res['oracle']['evaluator']['accuracy']) == {'shape', 'colour', 'size', 'position'}
    assert any('Inception' in n for n in res['notes'])           # no weights file here: said, not silently skipped
    assert json.loads((run_dir/'eval.json').read_text()) == res
    md = (run_dir/'eval.md').read_text()
    assert md.startswith('# Evaluation of') and '| FID (evaluator (shapes, 32px)) |' in md and '| R-precision |' in md
    assert (run_dir/'eval_samples.png').is_file()
    assert 'evaluating' in r.stderr                                # progress on stderr, JSON alone on stdout


def test_eval_table_without_encoders(tiny_run):
    run_dir, _ = tiny_run
    r = run(str(run_dir), '--n_samples', '8', '--bs', '8', '--quiet', '--no_oracle', *TINY_EVAL)
    assert r.returncode == 0, r.stderr
    assert '| figure | generated | real (reference) | note |' in r.stdout
    assert 'R-precision skipped' in r.stdout and 'oracle skipped (--no_oracle)' in r.stdout
    assert r.stderr.strip() == ''


def test_help():
    r = run('--help')
    assert r.returncode == 0 and '--n_samples' in r.stdout and '--inception_weights' in r.stdout


@pytest.mark.parametrize('case, msg', [('missing', 'no run folder at'), ('no_ckpt', 'has no checkpoint.pt')])
def test_bad_input_is_one_line_exit_2(tiny_run, tmp_path, case, msg):
    run_dir, _ = tiny_run
    if case == 'missing': args = [str(tmp_path/'nowhere')]
    else:
        half = tmp_path/'half'; half.mkdir()
        for f in ('config.json', 'vocab.json'): shutil.copy(run_dir/f, half/f)
        args = [str(half)]
    r = run(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip().count('\n') == 0 and msg in r.stderr and 'Traceback' not in r.stderr


@pytest.mark.parametrize('kw, msg', [({'inception_weights': 'NONE'}, 'no Inception weights file at'),
                                     ({'n_samples': 1}, 'at least 2'), ({'bs': 0}, '--bs must be at least 1')])
def test_bad_options_exit_2_in_process(tiny_run, tmp_path, capsys, kw, msg):
    "The same entry point called in-process (faster than a subprocess): `cli_errors` turns the error into exit 2."
    from t2i_nb.metrics import t2i_eval
    run_dir, _ = tiny_run
    kw = {k: (str(tmp_path/'none.pth') if v == 'NONE' else v) for k, v in kw.items()}
    with pytest.raises(SystemExit) as e:
        t2i_eval(str(run_dir), device='cpu', quiet=True, evaluator_width=4, evaluator_epochs=1, evaluator_extra=40, **kw)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().count('\n') == 0 and msg in err
