"Every backbone x text side x label term trains through `t2i_train`; the old `--model` names and old run folders still work."
import json
from itertools import product
import pytest, torch
from t2i_nb.engine import load_checkpoint, save_checkpoint, CKPT_NAME
from t2i_nb.train import t2i_train, load_run, TrainConfig
from t2i_nb.importer import t2i_import
from t2i_nb.models import GANConfig
from t2i_nb.backbones.dfgan import DFGAN

torch.set_num_threads(1)
TINY = dict(bs=4, img_size=32, nf=4, ckpt_every=0, quiet=True)


@pytest.fixture(scope='module')
def data(tiny_shapes): return tiny_shapes   # (root, encoders): tests/conftest.py


@pytest.mark.parametrize('backbone, text, scl', list(product(('dfgan', 'ssa', 'attngan', 'dmgan'), ('damsm', 'dte', 'dte-shared'), ('none', 'supcon', 'unicl', 'ce'))))
def test_every_combination_trains(backbone, text, scl, data, tmp_path):
    root, enc = data
    t2i_train(out=str(tmp_path/'r'), root=str(root), steps=2, backbone=backbone, text=text, scl=scl, encoders=str(enc), **TINY)
    run = load_run(tmp_path/'r')
    assert (run.cfg.net.backbone, run.cfg.net.text, run.cfg.net.scl) == (backbone, text, scl)
    assert json.loads((tmp_path/'r'/'metrics.json').read_text())['steps'] == 2
    toks, lens = run.vocab.encode_batch(['a red circle', 'a blue square'])
    with torch.no_grad(): assert run.system.generate(toks, lens, netG=run.netG).shape == (2, 3, 32, 32)


@pytest.mark.parametrize('model, want', [('dfgan', ('dfgan', 'damsm')), ('ssa', ('dfgan-mask', 'damsm')),
                                         ('dte', ('dfgan', 'dte')), ('dte-shared', ('dfgan', 'dte-shared'))])
def test_old_model_names_are_aliases(model, want, data, tmp_path):
    root, enc = data
    t2i_train(out=str(tmp_path/'r'), root=str(root), steps=1, model=model, scl='none', encoders=str(enc), **TINY)
    net = TrainConfig.load(tmp_path/'r'/'config.json').net
    assert (net.backbone, net.text) == want


def _to_old_format(run_dir, model='ssa'):
    "Rewrite a run folder as the previous version wrote it: `model` in config.json, DTE settings under `text`, networks at the system's top."
    def old_cfg(d):
        net = dict(d['net']); net.pop('backbone'); net.pop('text')
        net = {'model': model, **net, 'text': net.pop('dte'), 'gan': {**net['gan'], 'arch': 'ssa' if model == 'ssa' else 'dfgan'}}
        return {**d, 'net': net}
    (run_dir/'config.json').write_text(json.dumps(old_cfg(json.loads((run_dir/'config.json').read_text()))))
    ck = load_checkpoint(run_dir)
    ck['config'] = old_cfg(ck['config'])
    ck['system'] = {k.replace('backbone.', '', 1): v for k, v in ck['system'].items()}
    save_checkpoint(ck, run_dir/CKPT_NAME)


def test_old_run_folder_loads_generates_and_resumes(data, tmp_path, capsys):
    root, enc = data
    run_dir = tmp_path/'old'
    t2i_train(out=str(run_dir), root=str(root), steps=2, backbone='dfgan-mask', text='damsm', scl='none', encoders=str(enc), **TINY)
    before = load_run(run_dir)
    _to_old_format(run_dir, 'ssa')
    assert 'model' in json.loads((run_dir/'config.json').read_text())['net']
    after = load_run(run_dir)                                             # migrated on load
    assert (after.cfg.net.backbone, after.cfg.net.text) == ('dfgan-mask', 'damsm')
    z, s = torch.randn(2, after.cfg.net.gan.z_dim), torch.randn(2, 32)
    with torch.no_grad(): torch.testing.assert_close(after.netG(z, s), before.netG(z, s))
    t2i_train(resume=str(run_dir), steps=3, quiet=True)                   # and it continues
    assert load_checkpoint(run_dir)['step'] == 3


def test_t2i_import_cli(data, tmp_path, capsys):
    root, enc = data
    lay = DFGAN.official_layout(GANConfig(img_size=32, nf=4, cond_dim=32))
    torch.save({'model': {'netG': {k: torch.randn(s) * 0.05 for k, s in lay['netG'].items()}}}, tmp_path/'state_epoch_9.pth')
    t2i_import(arch='dfgan', netG=str(tmp_path/'state_epoch_9.pth'), encoders=str(enc), out=str(tmp_path/'imp'))
    assert 'imported dfgan' in capsys.readouterr().out
    assert load_checkpoint(tmp_path/'imp')['imported']['parts'] == ['netG']
    with pytest.raises(SystemExit) as e: t2i_import(arch='ssa', netG=str(tmp_path/'state_epoch_9.pth'), encoders=str(enc), out=str(tmp_path/'imp2'))
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and 'this is not an official SSA-GAN netG state dict' in err[0]
    with pytest.raises(SystemExit): t2i_import(arch='dfgan')
    assert 'give --netG' in capsys.readouterr().err
