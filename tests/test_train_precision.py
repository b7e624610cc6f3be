"Training engine: reduced precision on the CPU (bf16; fp16 with two GradScalers), on CUDA (skipped without a GPU), and models that need pre-trained encoders."
import json, math
from pathlib import Path
import pytest
import torch
from t2i_nb.shapes import make_shapes
from t2i_nb.models import GANConfig
from t2i_nb.gan import T2IConfig
from t2i_nb.engine import load_checkpoint
from t2i_nb.train import train, load_run
from test_train import tiny_cfg, quiet, history

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp('data')/'shapes', n=80, size=32, seed=0)


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_reduced_precision_on_cpu(shapes_root, tmp_path, precision):
    "bf16 autocast on the CPU; fp16 autocast + two GradScalers on the CPU (the CUDA path's logic) with MA-GP's scaling."
    run = tmp_path/precision
    learn = train(tiny_cfg(shapes_root, steps=2, bs=8, precision=precision, ckpt_every=0), run, progress=False, log=quiet)
    h = history(run)
    assert all(math.isfinite(v) for v in h['loss_G']) and learn.amp.mode == precision
    if precision == 'fp16':
        assert learn.amp.grad_scale('D') is not None
        ck = load_checkpoint(run)
        assert ck['amp']['scalers']['D']['scale'] > 0 and ck['amp']['mode'] == 'fp16'
    assert set(learn.amp.skipped) == {'D', 'G'}


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_cuda_precision(shapes_root, tmp_path, precision):
    learn = train(tiny_cfg(shapes_root, steps=4, precision=precision, ckpt_every=2), tmp_path/precision, device='cuda',
                  progress=False, log=quiet)
    h = history(tmp_path/precision)
    assert all(math.isfinite(v) for v in h['loss_D']) and learn.amp.mode == precision
    assert learn.gan_trainer.opt_d.defaults.get('fused')   # fused Adam on CUDA


def test_scl_and_baseline_pretrain_their_encoders(shapes_root, tmp_path):
    "dfgan (frozen DAMSM text encoder) + supcon (frozen image encoder): the job pre-trains the encoders into the run folder."
    net = T2IConfig(text='damsm', scl='supcon', gan=GANConfig(img_size=32, nf=8, z_dim=16, cond_dim=32))
    run = tmp_path/'dfgan'
    train(tiny_cfg(shapes_root, steps=2, net=net, pretrain_epochs=1, ckpt_every=0), run, progress=False, log=quiet)
    assert (run/'encoders'/'text_encoder.pth').exists()
    h = history(run)
    assert 'g_supcon' in h and all(math.isfinite(v) for v in h['g_supcon'])
    system, ema_g, cfg, vocab = load_run(run)
    assert cfg.net.gan.cond_dim == system.damsm_text.out_dim
