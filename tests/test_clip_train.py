"""CLIP wired into the toolkit: `t2i_pretrain --encoder clip` makes a small CLIP, `t2i_train --text clip` (any backbone,
GALIP included, with and without SCL on the CLIP pair) trains on it, the checkpoint holds no CLIP tensor, the run reloads
its CLIP from the recorded path, resumes, generates, and `t2i_eval` reports the CLIP score. Tiny sizes: seconds each."""
import io, json, os, shutil
from contextlib import redirect_stdout
import pytest, torch
from t2i_nb.shapes import make_shapes
from t2i_nb.pretrain import t2i_pretrain, CLIP_FILE
from t2i_nb.clip import load_clip
from t2i_nb.engine import load_checkpoint
from t2i_nb.train import t2i_train, load_run, TrainConfig
from t2i_nb.metrics import t2i_eval
from t2i_nb.generate import t2i_generate

torch.set_num_threads(1)
TINY = dict(bs=4, img_size=32, nf=4, ckpt_every=0, quiet=True)
TINY_EVAL = dict(evaluator_width=4, evaluator_epochs=1, evaluator_extra=0, no_oracle=True, n_samples=4, bs=4, device='cpu', quiet=True)
CLIP_KEYS = ('clip_text', 'clip_image', 'CLIP_ViT', 'clip_img')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('cliptrain')
    root = make_shapes(d/'shapes', n=40, size=32, seed=0)
    with redirect_stdout(io.StringIO()) as so:
        t2i_pretrain(root=str(root), out=str(d/'clip'), encoder='clip', scl='supcon', epochs=1, bs=8, image_size=32, clip_width=64,
                     clip_layers=1, clip_embed_dim=16, clip_context=24, valid_every=0, quiet=True)
    out = so.getvalue()
    assert 'R-precision' in out and '--clip' in out                        # reported like the DAMSM encoders', and how to use it
    m = json.loads((d/'clip'/'metrics.json').read_text())
    assert 0 <= m['r_precision'] <= 1 and 'i2t_r1' in m
    return root, d/'clip'/CLIP_FILE


def _no_clip_tensors(run_dir):
    ck = load_checkpoint(run_dir)
    for part in (ck['system'], ck['ema']['state']):
        bad = [k for k in part if set(k.split('.')) & set(CLIP_KEYS)]
        assert not bad, bad[:3]


@pytest.mark.parametrize('scl', ['none', 'supcon'])
def test_galip_trains_on_a_pretrained_small_clip(scl, data, tmp_path):
    root, clip = data
    run_dir = tmp_path/'galip'
    t2i_train(out=str(run_dir), root=str(root), steps=2, backbone='galip', text='clip', scl=scl, clip=str(clip), **TINY)
    cfg = TrainConfig.load(run_dir/'config.json')
    assert (cfg.net.backbone, cfg.net.text, cfg.net.scl, cfg.net.gan.cond_dim) == ('galip', 'clip', scl, 16)
    assert cfg.clip == str(clip.resolve())                                 # the run records where its CLIP is
    assert not (run_dir/'encoders').exists()                               # SCL on GALIP uses the CLIP pair, no DAMSM encoders
    _no_clip_tensors(run_dir)
    run = load_run(run_dir)
    assert run.system.backbone.netG.mapping.CLIP_ViT.transformer is run.system.clip_text.clip.visual.transformer   # one CLIP
    toks, lens = run.vocab.encode_batch(['a red circle', 'a blue square'])
    with torch.no_grad(): assert run.system.generate(toks, lens, netG=run.netG).shape == (2, 3, 32, 32)
    if scl == 'supcon':
        t2i_train(resume=str(run_dir), steps=3, quiet=True)                # resume reloads the CLIP from the recorded path
        assert load_checkpoint(run_dir)['step'] == 3
        _no_clip_tensors(run_dir)


def test_eval_and_generate_on_a_galip_run(data, tmp_path, capsys):
    root, clip = data
    run_dir = tmp_path/'g'
    t2i_train(out=str(run_dir), root=str(root), steps=1, backbone='galip', text='clip', clip=str(clip), **TINY)
    with redirect_stdout(io.StringIO()) as so: t2i_eval(str(run_dir), json=True, **TINY_EVAL)
    res = json.loads(so.getvalue())
    cs = res['clip_score']                                                  # the run's own CLIP
    assert cs['clip'] == str(clip.resolve()) and 0 <= cs['generated'] <= 100 and 0 <= cs['real'] <= 100
    assert -1 <= cs['generated_galip'] <= 1
    assert '| CLIP score |' in (run_dir/'eval.md').read_text()
    rp = res['r_precision']                                                 # no DAMSM pair: R-precision with the CLIP pair
    assert rp['encoders'].startswith('CLIP') and 0 <= rp['generated'] <= 1 and 0 <= rp['real'] <= 1
    assert '(CLIP pair)' in (run_dir/'eval.md').read_text()
    t2i_generate(['a red circle', 'a small blue square'], run=str(run_dir), n=2, out=str(tmp_path/'g.png'), device='cpu')
    assert (tmp_path/'g.png').is_file()


def test_clip_text_side_on_dfgan_and_clip_score_for_any_run(data, tmp_path):
    root, clip = data
    run_dir = tmp_path/'df'
    t2i_train(out=str(run_dir), root=str(root), steps=2, backbone='dfgan', text='clip', scl='ce', clip=str(clip), **TINY)
    run = load_run(run_dir)
    assert (run.cfg.net.text, run.cfg.net.gan.cond_dim, run.system.label_head.fc.in_features) == ('clip', 16, 16)
    _no_clip_tensors(run_dir)
    dte = tmp_path/'dte'                                                    # a run without a CLIP is scored with --clip
    t2i_train(out=str(dte), root=str(root), steps=1, text='dte', scl='none', **TINY)
    with redirect_stdout(io.StringIO()) as so: t2i_eval(str(dte), json=True, clip=str(clip.parent), **TINY_EVAL)
    assert json.loads(so.getvalue())['clip_score']['clip'] == str(clip)


def test_env_clip_and_missing_clip_are_one_line_errors(data, tmp_path, capsys, monkeypatch):
    root, clip = data
    monkeypatch.setenv('T2I_CLIP', str(clip))
    t2i_train(out=str(tmp_path/'env'), root=str(root), steps=1, backbone='galip', text='clip', **TINY)
    assert TrainConfig.load(tmp_path/'env'/'config.json').clip == str(clip.resolve())
    monkeypatch.delenv('T2I_CLIP')
    for kw, msg in ((dict(backbone='galip', text='damsm'), 'needs --text clip'),
                    (dict(backbone='galip', text='clip', clip=str(tmp_path/'nope.pt')), 't2i_pretrain --encoder clip')):
        with pytest.raises(SystemExit) as e: t2i_train(out=str(tmp_path/'bad'), root=str(root), steps=1, **kw, **TINY)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and msg in err[0], err
    moved = tmp_path/'moved.safetensors'                                    # a run whose CLIP went away: one line
    shutil.copy(clip, moved)
    t2i_train(out=str(tmp_path/'m'), root=str(root), steps=1, text='clip', scl='none', clip=str(moved), **TINY)
    moved.unlink()
    with pytest.raises(SystemExit) as e: t2i_eval(str(tmp_path/'m'), **TINY_EVAL)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "the run's CLIP is not at" in err[-1], err


def test_galip_cpu_pretrains_its_small_clip_into_the_run(data, tmp_path, monkeypatch):
    root, _ = data
    monkeypatch.delenv('T2I_CLIP', raising=False)
    run_dir = tmp_path/'a'/'gc'
    t2i_train(preset='galip-cpu', out=str(run_dir), root=str(root), steps=1, pretrain_epochs=1, bs=4, nf=4, ckpt_every=0, quiet=True)
    assert (run_dir/'clip'/CLIP_FILE).is_file()
    cfg = TrainConfig.load(run_dir/'config.json')
    assert (cfg.clip, cfg.net.gan.cond_dim) == (f'clip/{CLIP_FILE}', 128)     # recorded inside the run folder
    shutil.move(str(run_dir), str(tmp_path/'elsewhere'))                     # so the run folder can move
    assert load_run(tmp_path/'elsewhere').system.clip_text.clip.t2i_clip_path == str(tmp_path/'elsewhere'/'clip'/CLIP_FILE)
