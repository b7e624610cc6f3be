"The `t2i_train` console script end to end: --help, one-line errors, SIGTERM/SIGINT -> checkpoint and a clean exit, resume."
import json, os, signal, subprocess, sys, threading, time
from pathlib import Path
import pytest
import torch
from t2i_nb.shapes import make_shapes
from t2i_nb.engine import load_checkpoint
from t2i_nb.train import t2i_train

TINY = dict(bs=8, img_size=32, nf=8, model='dte', scl='none', text_init='scratch', quiet=True)  # no encoders to pre-train


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp('data')/'shapes', n=80, size=32, seed=0)


def cmd(*args): return [sys.executable, '-m', 't2i_nb.train', *map(str, args)]


def env(): return {**os.environ, 'OMP_NUM_THREADS': '1', 'T2I_DEVICE': 'cpu', 'PYTHONUNBUFFERED': '1'}


def test_help():
    r = subprocess.run(cmd('--help'), capture_output=True, text=True, timeout=300, env=env())
    assert r.returncode == 0 and '--resume' in r.stdout and '--precision' in r.stdout and '--encoders' in r.stdout


@pytest.mark.parametrize('kw, msg', [(dict(model='gpt'), "unknown model 'gpt'"), (dict(preset='tpu'), "unknown preset 'tpu'"),
                                     (dict(bs=7), '--bs must be even'), (dict(precision='fp8'), "unknown precision 'fp8'"),
                                     (dict(channels_last='yes'), '--channels_last must be on or off')])
def test_bad_input_is_one_line(kw, msg, capsys, tmp_path):
    with pytest.raises(SystemExit) as e: t2i_train(out=str(tmp_path/'x'), **kw)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and msg in err[0], err


@pytest.mark.parametrize('flag, want', [('off', False), ('on', True), (None, None)])
def test_channels_last_on_off_or_the_presets(flag, want, shapes_root, tmp_path):
    "--channels_last off can turn off what a preset turns on; unset keeps the preset's (cpu-quick: None, decided by device)."
    t2i_train(out=str(tmp_path/'r'), root=str(shapes_root), steps=1, ckpt_every=0, channels_last=flag, **TINY)
    assert json.loads((tmp_path/'r'/'config.json').read_text())['channels_last'] is want


def test_sigterm_saves_and_resumes(shapes_root, tmp_path):
    "A real process gets SIGTERM after its first checkpoint: it saves, exits 143 (as a signalled process), and the run continues with --resume."
    run_dir = tmp_path/'run'
    p = subprocess.Popen(cmd('--out', run_dir, '--root', shapes_root, '--steps', 500, '--ckpt_every', 2, '--bs', 8, '--img_size', 32,
                             '--nf', 8, '--model', 'dte', '--scl', 'none', '--text_init', 'scratch', '--quiet'),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    t0 = time.time()
    while not (run_dir/'checkpoint.pt').exists():
        assert p.poll() is None, p.communicate()
        assert time.time() - t0 < 150, 'no checkpoint after 150 s'
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=150)
    assert p.returncode == 143, err
    assert 'stopped by SIGTERM' in err and 'Traceback' not in err
    step = load_checkpoint(run_dir)['step']
    assert 2 <= step < 500
    t2i_train(resume=str(run_dir), steps=step + 2, quiet=True)            # the same folder continues
    assert load_checkpoint(run_dir)['step'] == step + 2


def test_sigint_saves_and_exits_130(shapes_root, tmp_path, capsys):
    "Ctrl-C (SIGINT to this process, in the middle of training) -> checkpoint after the current step, exit status 130."
    run_dir = tmp_path/'run'
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when CI starts us in the background, default_int_handler in a terminal
    def interrupt():
        t0 = time.time()
        while not (run_dir/'checkpoint.pt').exists() and time.time() - t0 < 150: time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(SystemExit) as e:
        t2i_train(out=str(run_dir), root=str(shapes_root), steps=500, ckpt_every=2, **TINY)
    assert e.value.code == 130
    assert 'stopped by SIGINT' in capsys.readouterr().err
    assert 2 <= load_checkpoint(run_dir)['step'] < 500
    assert signal.getsignal(signal.SIGINT) is before   # the handler we found is restored
