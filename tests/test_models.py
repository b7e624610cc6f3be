"Tests for t2i_nb.models that do not fit the notebook: every resolution, naive MA-GP, init, tiny-batch fits."
import time
import pytest
import torch
from torch import nn
from hypothesis import given, settings, strategies as st

from t2i_nb.core import T2IError, set_seed
from t2i_nb.models import (GANConfig, build_backbone, channels, d_hinge_loss, g_hinge_loss, ma_gp, ma_gp_from_out, mismatch,
                           n_params)
from t2i_nb.backbones.dfgan import Affine, Fuse, NetG, NetD, NetC

ARCHS = ('dfgan', 'dfgan-mask')   # the DF-GAN module's two variants (SSA-GAN and the official layouts: tests/test_official.py)

def _cfg(cfg): return GANConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
def build_generator(cfg, arch='dfgan'): return build_backbone(arch, _cfg(cfg)).netG
def build_discriminator(cfg):
    bb = build_backbone('dfgan', _cfg(cfg))
    return bb.netD, bb.netC

torch.set_num_threads(1)


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('size', [32, 64, 128, 256])
@pytest.mark.parametrize('nf', [8, 16, 32])
def test_shapes(arch, size, nf):
    set_seed(0)
    cfg = GANConfig(img_size=size, nf=nf, cond_dim=32, z_dim=16)
    netG, (netD, netC) = build_generator(cfg, arch), build_discriminator(cfg)
    B = 2 if size <= 64 else 1
    z, s = torch.randn(B, 16), torch.randn(B, 32)
    with torch.no_grad():
        img, masks = netG(z, s, return_masks=True)
        feats = netD(img)
        out = netC(feats, s)
    assert img.shape == (B, 3, size, size)
    assert img.min() >= -1 and img.max() <= 1
    assert feats.shape == (B, 8 * nf, 4, 4)
    assert out.shape == (B,)
    assert len(netG.blocks) == len(netD.blocks) == cfg.n_blocks
    if arch == 'dfgan-mask':
        assert [tuple(m.shape) for m in masks] == [(B, 1, 2**(3 + i), 2**(3 + i)) for i in range(cfg.n_blocks)]
        assert all(((m > 0) & (m < 1)).all() for m in masks)
    else:
        assert masks == [None] * cfg.n_blocks


def test_channel_schedule():
    assert channels(32, 32) == [256, 128, 64, 32]
    assert channels(64, 128) == [512, 512, 512, 256, 128, 64]
    cfg = GANConfig(img_size=128, nf=16)
    netG, (netD, _) = build_generator(cfg), build_discriminator(cfg)
    assert [b.c1.out_channels for b in netG.blocks] == channels(16, 128)[1:]
    assert [b.res[0].out_channels for b in netD.blocks] == channels(16, 128)[::-1][1:]
    # learned 1x1 shortcut exactly where the width changes
    assert [isinstance(b.shortcut, nn.Conv2d) for b in netG.blocks] == [False, False, True, True, True]


def test_grey_images_and_dict_config():
    netG = build_generator({'img_size': 32, 'nf': 8, 'ch': 1})
    netD, netC = build_discriminator({'img_size': 32, 'nf': 8, 'ch': 1})
    with torch.no_grad(): img = netG(torch.randn(2, 100), torch.randn(2, 256))
    assert img.shape == (2, 1, 32, 32) and netC(netD(img), torch.randn(2, 256)).shape == (2,)


def test_per_sample_independence():
    "No batch norm anywhere: a sample's image and logit do not depend on the rest of the batch."
    set_seed(1)
    for arch in ARCHS:
        cfg = GANConfig(img_size=32, nf=8)
        netG, (netD, netC) = build_generator(cfg, arch), build_discriminator(cfg)
        z, s = torch.randn(3, 100), torch.randn(3, 256)
        with torch.no_grad():
            full = netC(netD(netG(z, s)), s)
            one = torch.cat([netC(netD(netG(z[i:i+1], s[i:i+1])), s[i:i+1]) for i in range(3)])
        torch.testing.assert_close(full, one, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- errors
def test_config_errors():
    with pytest.raises(T2IError, match='img_size=48'): GANConfig(img_size=48)
    with pytest.raises(T2IError, match='img_size=512'): GANConfig(img_size=512)
    with pytest.raises(T2IError, match="unknown backbone 'attn'"): build_backbone('attn')
    with pytest.raises(T2IError, match='nf=0'): GANConfig(nf=0)
    with pytest.raises(T2IError, match="unknown key 'ngf'"): build_generator({'ngf': 32})


def test_shape_errors_are_one_line():
    cfg = GANConfig(img_size=32, nf=8)
    netG, (netD, netC) = build_generator(cfg), build_discriminator(cfg)
    for f, msg in [(lambda: netG(torch.randn(2, 99), torch.randn(2, 256)), 'noise z must be'),
                   (lambda: netG(torch.randn(2, 100), torch.randn(2, 255)), 'sentence embedding s must be'),
                   (lambda: netG(torch.randn(2, 100), torch.randn(3, 256)), '2 noise vectors but 3'),
                   (lambda: netD(torch.randn(2, 3, 64, 64)), r'images must be \[B, 3, 32, 32\]'),
                   (lambda: netC(torch.randn(2, 64, 4, 4), torch.randn(2, 7)), 'sentence embedding s must be')]:
        with pytest.raises(T2IError, match=msg) as e: f()
        assert '\n' not in str(e.value)


# ---------------------------------------------------------------- initialisation
@pytest.mark.parametrize('arch', ARCHS)
def test_init_affine_is_identity(arch):
    set_seed(2)
    cfg = GANConfig(img_size=64, nf=8)
    netG = build_generator(cfg, arch)
    affines = [m for m in netG.modules() if isinstance(m, Affine)]
    assert len(affines) == 4 * cfg.n_blocks
    c = torch.randn(5, cfg.z_dim + cfg.cond_dim) * 10         # any condition, even a large one
    for a in affines:
        g, b = a.gamma_beta(c)
        assert torch.equal(g.detach(), torch.ones_like(g)) and torch.equal(b.detach(), torch.zeros_like(b))
        x = torch.randn(5, g.shape[1], 4, 4)
        assert torch.equal(a(x, c).detach(), x)
        assert torch.allclose(a(x, c, torch.rand(5, 1, 4, 4)).detach(), x)   # SSA's gating of an identity is the identity
    # D's residual scales start at zero
    netD, _ = build_discriminator(cfg)
    assert all(b.gamma.item() == 0 for b in netD.blocks)


def test_masked_affine_formulas_agree():
    "h + m * (modulated - h) is the paper's (1 + m * dgamma) h + m * beta."
    set_seed(3)
    a = Affine(6, 4)
    for p in a.parameters(): nn.init.normal_(p)
    x, c, m = torch.randn(2, 4, 3, 3), torch.randn(2, 6), torch.rand(2, 1, 3, 3)
    g, b = a.gamma_beta(c)
    torch.testing.assert_close(a(x, c, m), (1 + m * (g - 1)) * x + m * b)
    torch.testing.assert_close(a(x, c, torch.ones_like(m)), a(x, c))
    torch.testing.assert_close(a(x, c, torch.zeros_like(m)), x)


def test_text_changes_images_once_trained_away_from_identity():
    "The condition reaches the pixels: after perturbing the affines, different sentences give different images."
    set_seed(4)
    for arch in ARCHS:
        netG = build_generator(GANConfig(img_size=32, nf=8), arch)
        for m in netG.modules():
            if isinstance(m, Affine): nn.init.normal_(m.fc_gamma[-1].weight, std=0.1)
        z = torch.randn(1, 100).repeat(2, 1)
        with torch.no_grad(): img = netG(z, torch.randn(2, 256))
        assert (img[0] - img[1]).abs().max() > 1e-3


# ---------------------------------------------------------------- losses
def test_hinge_losses():
    real, fake, mis = torch.tensor([2., 0.5, -1.]), torch.tensor([-3., 0., 1.]), torch.tensor([0., -2., -1.])
    relu = torch.relu
    exp = relu(1 - real).mean() + (relu(1 + fake).mean() + relu(1 + mis).mean()) / 2
    torch.testing.assert_close(d_hinge_loss(real, fake, mis), exp)
    torch.testing.assert_close(d_hinge_loss(real, fake), relu(1 - real).mean() + relu(1 + fake).mean())
    torch.testing.assert_close(g_hinge_loss(fake), -fake.mean())
    # a perfect discriminator has zero loss
    assert d_hinge_loss(torch.ones(4) * 5, -torch.ones(4) * 5, -torch.ones(4) * 5).item() == 0


def test_mismatch_roll_by_one():
    s = torch.randn(6, 3)
    torch.testing.assert_close(mismatch(s), torch.cat([s[-1:], s[:-1]]))
    assert not any(torch.equal(a, b) for a, b in zip(mismatch(s), s))
    with pytest.raises(T2IError, match='at least 2'): mismatch(s[:1])
    with pytest.raises(T2IError, match='6 sentence embeddings but 5 labels'): mismatch(s, torch.arange(5))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=16))
def test_mismatch_with_labels_minimises_clashes(labels):
    lbl = torch.tensor(labels)
    s = torch.arange(len(lbl)).float()
    m = mismatch(s, lbl).long()
    assert sorted(m.tolist()) == list(range(len(lbl)))                  # a permutation
    assert all(int(m[i]) != i for i in range(len(lbl)))                 # no image keeps its own caption
    clashes = int((lbl[m] == lbl).sum())
    assert clashes == min(int((lbl == lbl.roll(k)).sum()) for k in range(1, len(lbl)))


# ---------------------------------------------------------------- MA-GP
def _naive_ma_gp(netD, netC, img, s, k=2., p=6.):
    "One sample at a time: autograd.grad of that sample's logit, L2 norm over both gradients, then k * mean(norm**p)."
    vals = []
    for i in range(len(img)):
        x = img[i:i+1].detach().clone().requires_grad_(True)
        e = s[i:i+1].detach().clone().requires_grad_(True)
        out = netC(netD(x), e)[0]
        gx, ge = torch.autograd.grad(out, [x, e], create_graph=True)
        norm = torch.sqrt((gx ** 2).sum() + (ge ** 2).sum())
        vals.append(norm ** p)
    return k * sum(vals) / len(vals)


def _disc(seed=0, nf=8, size=32):
    set_seed(seed)
    cfg = GANConfig(img_size=size, nf=nf, cond_dim=24)
    netD, netC = build_discriminator(cfg)
    for b in netD.blocks: nn.init.uniform_(b.gamma, 0.2, 1.0)  # make the residual branches matter
    return cfg, netD, netC


@pytest.mark.parametrize('k,p', [(2., 6.), (1., 2.), (0.5, 3.)])
def test_ma_gp_equals_naive(k, p):
    cfg, netD, netC = _disc()
    img, s = torch.randn(4, 3, 32, 32), torch.randn(4, 24)
    gp, naive = ma_gp(netD, netC, img, s, k=k, p=p), _naive_ma_gp(netD, netC, img, s, k=k, p=p)
    torch.testing.assert_close(gp, naive, rtol=1e-4, atol=0)
    # and the penalty trains D/C the same way (create_graph=True): compare parameter gradients
    params = [*netD.parameters(), *netC.parameters()]
    g1 = torch.autograd.grad(gp, params, allow_unused=True)
    g2 = torch.autograd.grad(_naive_ma_gp(netD, netC, img, s, k=k, p=p), params, allow_unused=True)
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        if a is not None: torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-9)
    assert sum(a.abs().sum() for a in g1 if a is not None) > 0


def test_ma_gp_from_out_matches_and_leaves_inputs_alone():
    cfg, netD, netC = _disc(1)
    img, s = torch.randn(3, 3, 32, 32), torch.randn(3, 24)
    gp = ma_gp(netD, netC, img, s)
    assert not img.requires_grad and not s.requires_grad
    x, e = img.clone().requires_grad_(), s.clone().requires_grad_()
    torch.testing.assert_close(ma_gp_from_out(netC(netD(x), e), x, e), gp)


def test_ma_gp_reaches_a_trainable_text_encoder():
    "DTE-style: s produced by a module that is being trained; the penalty's gradient flows back into it."
    cfg, netD, netC = _disc(2)
    # with LeakyReLU, C is piecewise linear in s, so d(penalty)/ds is exactly 0 almost everywhere; a smooth
    # activation makes the connection visible
    netC.joint[1] = nn.Softplus()
    enc = nn.Linear(10, 24)
    s = enc(torch.randn(3, 10))
    gp = ma_gp(netD, netC, torch.randn(3, 3, 32, 32), s)
    gp.backward()
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0


def test_ma_gp_zero_gradient_is_finite():
    "norm**p is computed as (sum g^2)**(p/2): no nan from sqrt at a zero gradient."
    cfg, netD, netC = _disc(3)
    for p in netC.parameters(): nn.init.zeros_(p)
    img, s = torch.randn(2, 3, 32, 32), torch.randn(2, 24)
    gp = ma_gp(netD, netC, img, s)
    gp.backward()
    assert gp.item() == 0
    assert all(torch.isfinite(p.grad).all() for p in [*netD.parameters(), *netC.parameters()] if p.grad is not None)


@pytest.mark.parametrize('scale', [2.**4, 2.**10, 2.**16])
def test_ma_gp_inv_scale_fp32(scale):
    cfg, netD, netC = _disc(4)
    img, s = torch.randn(3, 3, 32, 32), torch.randn(3, 24)
    torch.testing.assert_close(ma_gp(netD, netC, img, s, inv_scale=1 / scale), ma_gp(netD, netC, img, s), rtol=1e-4, atol=0)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_ma_gp_inv_scale_under_autocast(dtype):
    cfg, netD, netC = _disc(5)
    img, s = torch.randn(3, 3, 32, 32), torch.randn(3, 24)
    ref = ma_gp(netD, netC, img, s)
    with torch.autocast('cpu', dtype=dtype):
        gp = ma_gp(netD, netC, img, s, inv_scale=1 / 2**10)
    assert gp.dtype == torch.float32
    torch.testing.assert_close(gp, ref, rtol=0.05, atol=0)


# ---------------------------------------------------------------- tiny-batch fits
def _fit_tiny(arch, d_steps=20, g_steps=20, seed=0):
    set_seed(seed)
    cfg = GANConfig(img_size=32, nf=8)
    netG, (netD, netC) = build_generator(cfg, arch), build_discriminator(cfg)
    real, s, z = torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, cfg.cond_dim), torch.randn(4, cfg.z_dim)
    with torch.no_grad(): fake = netG(z, s)
    optD = torch.optim.Adam([*netD.parameters(), *netC.parameters()], lr=4e-4, betas=(0., 0.9))
    d_losses = []
    for _ in range(d_steps):
        x, e = real.clone().requires_grad_(), s.clone().requires_grad_()
        feats = netD(x); real_out = netC(feats, e)
        gp = ma_gp_from_out(real_out, x, e)
        loss = d_hinge_loss(real_out, netC(netD(fake), s), netC(feats, mismatch(s)))
        optD.zero_grad(); (loss + gp).backward(); optD.step()
        d_losses.append(loss.item())
    for m in (netD, netC): m.requires_grad_(False)
    optG = torch.optim.Adam(netG.parameters(), lr=1e-4, betas=(0., 0.9))
    g_losses = []
    for _ in range(g_steps):
        loss = g_hinge_loss(netC(netD(netG(z, s)), s))
        optG.zero_grad(); loss.backward(); optG.step()
        g_losses.append(loss.item())
    return d_losses, g_losses


@pytest.mark.parametrize('arch', ARCHS)
def test_tiny_batch_fit_lowers_losses(arch):
    t0 = time.process_time()                               # CPU time: robust to other jobs sharing the cores
    d1, g1 = _fit_tiny(arch)
    assert time.process_time() - t0 < 10
    assert d1[-1] < d1[0] - 0.01, d1
    assert g1[-1] < g1[0] - 0.01, g1
    d2, _ = _fit_tiny(arch, d_steps=3, g_steps=0)           # seeded: the same numbers again
    assert d2 == d1[:3]


def test_n_params_meta_device():
    cfg = GANConfig(img_size=64, nf=32)
    with torch.device('meta'): n_meta = n_params(build_generator(cfg))
    assert n_meta == n_params(build_generator(cfg))
    assert n_params(build_generator(cfg, 'dfgan-mask')) > n_meta
