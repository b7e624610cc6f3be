"Training engine and job (t2i_nb.engine, t2i_nb.train): exact resume through `train`, NaN faults, configuration mismatches, precisions, run folders."
import json, math
from pathlib import Path
import pytest
import torch
from t2i_nb.core import T2IError
from t2i_nb.shapes import make_shapes
from t2i_nb.models import GANConfig
from t2i_nb.encoders import TextEmbedConfig
from t2i_nb.gan import T2IGAN, T2IConfig
from t2i_nb.engine import resolve_precision, load_checkpoint, NonFiniteLoss, gan_learner, fit_steps, CKPT_NAME
from t2i_nb.train import TrainConfig, train, load_run, t2i_train

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp('data')/'shapes', n=80, size=32, seed=0)


def tiny_cfg(root, **kw):
    "DTE-GAN without SCL (no pre-trained encoders needed): 64 training images, 16 per batch -> 4 batches per epoch."
    net = kw.pop('net', None) or T2IConfig(text='dte', scl='none', gan=GANConfig(img_size=32, nf=8, z_dim=16, cond_dim=32),
                                           dte=TextEmbedConfig(ninput=16, nhidden=32))
    base = dict(dataset='shapes', root=str(root), bs=16, steps=6, ckpt_every=1, n_samples=4, seed=0, net=net)
    return TrainConfig(**{**base, **kw})


def quiet(*a, **k): pass


def history(run_dir): return json.loads((Path(run_dir)/'history.json').read_text())


def test_resume_is_exact(shapes_root, tmp_path):
    "6 steps straight == 3 steps, a fresh process-like restart from the run folder, 3 more (across an epoch boundary)."
    cfg = tiny_cfg(shapes_root)   # with lazy MA-GP on every 2nd step, so the resumed run must keep the schedule
    cfg = cfg.replace(net=cfg.net.replace(gp_every=2))
    train(cfg, tmp_path/'straight', progress=False, log=quiet)
    train(cfg.replace(steps=3), tmp_path/'split', progress=False, log=quiet)
    assert load_checkpoint(tmp_path/'split')['step'] == 3
    learn = train(cfg, tmp_path/'split', resume=True, progress=False, log=quiet)
    a, b = history(tmp_path/'straight'), history(tmp_path/'split')
    assert b['step'] == [1, 2, 3, 4, 5, 6]
    assert a.keys() == b.keys()
    for k in a:   # exact equality, not closeness
        assert a[k] == b[k] or all((x == y) or (math.isnan(x) and math.isnan(y)) for x, y in zip(a[k], b[k])), k
    ck_a, ck_b = load_checkpoint(tmp_path/'straight'), load_checkpoint(tmp_path/'split')
    for k in ck_a['system']: torch.testing.assert_close(ck_a['system'][k], ck_b['system'][k], rtol=0, atol=0)
    for k in ck_a['ema']['state']: torch.testing.assert_close(ck_a['ema']['state'][k], ck_b['ema']['state'][k], rtol=0, atol=0)
    assert learn.gan_trainer.step == 6
    assert [x == 0 for x in a['gp']] == [False, True, False, True, False, True]   # steps 1, 3, 5 (indices 0, 2, 4) carry it


def test_run_folder_and_load_run(shapes_root, tmp_path):
    run = tmp_path/'run'
    train(tiny_cfg(shapes_root, steps=5, ckpt_every=2), run, progress=False, log=quiet)
    names = {p.name for p in run.iterdir()}
    assert {'config.json', 'vocab.json', CKPT_NAME, 'history.json', 'loss_curves.png', 'metrics.json', 'samples'} <= names
    assert (run/'samples'/'latest.png').exists() and (run/'samples'/'step_000004.png').exists()   # epoch 1 ends at step 4
    m = json.loads((run/'metrics.json').read_text())
    assert m['steps'] == 5 and m['skipped_steps'] == {'D': 0, 'G': 0} and m['precision'] == resolve_precision('auto', 'cpu')
    ck = torch.load(run/CKPT_NAME, weights_only=True)   # loads without unpickling code
    assert {'system', 'gan_trainer', 'amp', 'ema', 'data_state', 'loss_history', 'rng', 'config'} <= set(ck)
    assert {'opt_g', 'opt_d'} <= set(ck['gan_trainer']) and set(ck['amp']['scalers']) == {'D', 'G'}
    system, ema_g, cfg, vocab = load_run(run)
    toks, lens = vocab.encode_batch(['a red circle', 'a blue square'])
    with torch.no_grad(): imgs = system.generate(toks, lens, netG=ema_g)
    assert imgs.shape == (2, 3, 32, 32) and cfg.net.dte.ntoken == len(vocab)


def test_nan_stops_and_keeps_last_good_checkpoint(shapes_root, tmp_path, monkeypatch, capsys):
    orig = T2IGAN.d_loss
    calls = {'n': 0}
    def d_loss(self, batch, grad_scale=None, step=None):
        calls['n'] += 1
        loss, logs = orig(self, batch, grad_scale, step)
        return (loss * float('nan'), logs) if calls['n'] == 4 else (loss, logs)   # the dry run is call 1: step 3 fails
    monkeypatch.setattr(T2IGAN, 'd_loss', d_loss)
    run = tmp_path/'nan'
    with pytest.raises(NonFiniteLoss, match='the D loss is nan at step 3'):
        train(tiny_cfg(shapes_root, steps=6), run, progress=False, log=quiet)
    ck = load_checkpoint(run)
    assert ck['step'] == 2
    # the console script: one line, exit 2, naming the last good checkpoint
    calls['n'] = 0
    cfg_args = dict(out=str(tmp_path/'nan_cli'), root=str(shapes_root), steps=6, bs=16, img_size=32, nf=8, model='dte', scl='none', text_init='scratch',
                    ckpt_every=1, quiet=True)
    with pytest.raises(SystemExit) as e: t2i_train(**cfg_args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'nan at step 3' in err[0] and 'last good checkpoint (step 2)' in err[0]


def test_resume_with_other_configuration_fails_in_one_line(shapes_root, tmp_path, capsys):
    run = tmp_path/'r'
    train(tiny_cfg(shapes_root, steps=2), run, progress=False, log=quiet)
    with pytest.raises(SystemExit) as e: t2i_train(resume=str(run), model='dte-shared', quiet=True)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: checkpoint was trained with text='dte', this run has text='dte-shared': a resumed run may change only steps")
    with pytest.raises(SystemExit): t2i_train(resume=str(run), nf=16, quiet=True)
    assert "gan.nf=8, this run has gan.nf=16" in capsys.readouterr().err
    # a library-level resume with an edited configuration: the first mismatching key is named
    with pytest.raises(T2IError, match='checkpoint was trained with'):
        train(tiny_cfg(shapes_root, steps=3, net=T2IConfig(text='dte-shared', scl='none', gan=GANConfig(img_size=32, nf=8, z_dim=16, cond_dim=32),
                                                           dte=TextEmbedConfig(ninput=16, nhidden=32))), run, resume=True, progress=False, log=quiet)
    with pytest.raises(SystemExit): t2i_train(resume=str(tmp_path/'nowhere'), quiet=True)
    assert 'not a t2i_train run folder' in capsys.readouterr().err


def test_resume_in_another_precision_says_so(shapes_root, tmp_path):
    "A run resumed in another precision (e.g. --precision auto on another machine) continues, with a note naming both."
    run, lines = tmp_path/'p', []
    train(tiny_cfg(shapes_root, steps=2, precision='fp32'), run, progress=False, log=quiet)
    learn = train(tiny_cfg(shapes_root, steps=3, precision='bf16'), run, resume=True, progress=False, log=lines.append)
    assert learn.gan_trainer.step == 3 and learn.amp.mode == 'bf16'
    assert any(l.startswith('note: the checkpoint was trained in fp32 and continues in bf16') and '--precision fp32' in l for l in lines), lines
    lines.clear()
    train(tiny_cfg(shapes_root, steps=4, precision='bf16'), run, resume=True, progress=False, log=lines.append)
    assert not any(l.startswith('note:') for l in lines), lines


def test_loader_workers_do_not_change_the_run(shapes_root, tmp_path):
    "All randomness of an epoch is planned in the main process: 2 worker processes give the same losses as none."
    train(tiny_cfg(shapes_root, steps=3, ckpt_every=0), tmp_path/'w0', progress=False, log=quiet)
    train(tiny_cfg(shapes_root, steps=3, ckpt_every=0, workers=2), tmp_path/'w2', progress=False, log=quiet)
    assert history(tmp_path/'w0')['loss_D'] == history(tmp_path/'w2')['loss_D']


def test_resume_of_a_checkpoint_older_than_new_fields(shapes_root, tmp_path):
    "A checkpoint written before a configuration field existed resumes with that field's default (not a mismatch)."
    run = tmp_path/'old'
    train(tiny_cfg(shapes_root, steps=2), run, progress=False, log=quiet)
    ck = load_checkpoint(run)
    for k in ('text_init', 'gp_every'): del ck['config']['net'][k]   # as saved by an earlier version
    torch.save(ck, run/CKPT_NAME)
    learn = train(tiny_cfg(shapes_root, steps=3), run, resume=True, progress=False, log=quiet)
    assert learn.gan_trainer.step == 3


OLD_NET = dict(n_classes=100, trunk_grad='both', align_gamma=10., scl_temperature=0.07, lambda_kl=1., gp_k=2., gp_p=6.,
               mismatch='roll', lambda_ms=0.)   # what a run folder written before these settings were retired holds in `net`


def test_run_folder_with_retired_settings(shapes_root, tmp_path):
    "An old run folder (retired keys at their old values, derived keys) still loads and resumes; a retired key at another value is a one-line error."
    run = tmp_path/'old'
    train(tiny_cfg(shapes_root, steps=2), run, progress=False, log=quiet)
    cfg, ck = json.loads((run/'config.json').read_text()), load_checkpoint(run)
    for c in (cfg, ck['config']):
        c['net'].update(OLD_NET); c['betas'] = [0., 0.9]
    (run/'config.json').write_text(json.dumps(cfg)); torch.save(ck, run/CKPT_NAME)
    assert load_run(run).cfg.net.gp_every == 1
    learn = train(TrainConfig.load(run/'config.json').replace(steps=3), run, resume=True, progress=False, log=quiet)
    assert learn.gan_trainer.step == 3
    cfg['net']['lambda_ms'] = 0.5
    (run/'config.json').write_text(json.dumps(cfg))
    with pytest.raises(T2IError, match=r"net\.lambda_ms=0\.5 is a retired setting \(it is always 0\.0 now\)"): load_run(run)
