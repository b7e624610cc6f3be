"""DM-GAN's generator against a transcription of the official forward pass (MinfengZhu/DM-GAN code/model.py:
Memory, NEXT_STAGE_G, G_NET), written with torch.nn.functional on the official state dict; its parameter counts, and
load_official('dmgan')."""
import pytest, torch
import torch.nn.functional as F
from t2i_nb.core import set_seed, T2IError
from t2i_nb.models import GANConfig, n_params
from t2i_nb.backbones.dmgan import DMNetG, DMGAN
from t2i_nb.backbones.attngan import AttnNetG, AttnNetD
from test_attngan import _random_state, ref_init_stage, ref_stage_tail

torch.set_num_threads(1)


def _conv1d_relu(sd, p, x): return F.relu(F.conv1d(x, sd[p + '.0.weight'], sd[p + '.0.bias']))

def ref_dmgan(sd, z, sent, words, mask, g, c_dim=100):
    h, img = ref_init_stage(sd, z, sent, g, c_dim)
    i = 2
    while f'h_net{i}.A.weight' in sd:
        p = f'h_net{i}.'
        B, _, ih, iw = h.shape
        T = words.size(2)
        # memory writing
        h_avg = F.avg_pool2d(h, kernel_size=ih).detach().squeeze(3)                  # nn.AvgPool2d(size)
        gate1 = F.linear(words.transpose(1, 2), sd[p + 'A.weight']).transpose(1, 2)
        gate2 = F.linear(h_avg.transpose(1, 2), sd[p + 'B.weight']).repeat(1, 1, T)
        writing_gate = torch.sigmoid(gate1 + gate2)
        h_avg = h_avg.repeat(1, 1, T)
        memory = _conv1d_relu(sd, p + 'M_w', words) * writing_gate + _conv1d_relu(sd, p + 'M_r', h_avg) * (1 - writing_gate)
        key, value = _conv1d_relu(sd, p + 'key', memory), _conv1d_relu(sd, p + 'value', memory)
        # key addressing and value reading (Memory.forward)
        Q = ih * iw
        targetT = h.view(B, -1, Q).transpose(1, 2)
        weight = torch.bmm(targetT, key).view(B * Q, T)
        weight.data.masked_fill_(mask.repeat(Q, 1), -float('inf'))                 # the official tiling
        weight = F.softmax(weight, dim=1).view(B, Q, T).transpose(1, 2)
        memory_out = torch.bmm(value, weight).view(B, -1, ih, iw)
        # response gate
        rg = torch.sigmoid(F.conv2d(torch.cat((h, memory_out), 1), sd[p + 'response_gate.0.weight'], sd[p + 'response_gate.0.bias']))
        h_new = h * (1 - rg) + rg * memory_out
        h = ref_stage_tail(sd, p, torch.cat((h_new, h_new), 1))                     # the gated feature, twice
        img = torch.tanh(F.conv2d(h, sd[f'img_net{i}.img.0.weight'], padding=1))
        i += 1
    return img


def _dm_state(G):
    sd = _random_state(G)
    for k in sd:   # Conv1d weights [no, ni, 1]: scale by the fan-in, as the 2-D ones are
        if sd[k].ndim == 3: sd[k] = torch.randn(sd[k].shape) / sd[k].shape[1] ** 0.5
    return sd


@pytest.mark.parametrize('size', [64, 128, 256])
def test_image_equals_official_forward(size):
    set_seed(0)
    G = DMNetG(GANConfig(img_size=size, nf=4, cond_dim=256, z_dim=100, official_mask=True)).eval()
    sd = _dm_state(G)
    G.load_state_dict(sd)
    z, sent, words = torch.randn(3, 100), torch.randn(3, 256), torch.randn(3, 256, 7)
    mask = torch.tensor([[False] * 7, [False] * 5 + [True] * 2, [False] * 3 + [True] * 4])   # unequal lengths: the tiling matters
    torch.manual_seed(11); ours = G(z, sent, words, mask)
    torch.manual_seed(11); ref = ref_dmgan(sd, z, sent, words, mask, 4)
    assert 0.02 < ref.std() and (ref.abs() < 0.99).float().mean() > 0.5   # not a flat or saturated image
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize('n_res, want', [(2, 21_449_042), (3, 22_335_314)])   # CUB (bird_DMGAN.yml), COCO (coco_DMGAN.yml): GF_DIM 64
def test_parameter_counts_equal_official(n_res, want):
    with torch.device('meta'): G = DMNetG(GANConfig(img_size=256, nf=64, cond_dim=256, z_dim=100, n_res=n_res))
    assert n_params(G) == want


def test_discriminator_parameter_counts_equal_official():
    "DF_DIM 32 (CUB and COCO); trainable parameters (the official SN u/v are non-trainable Parameters, ours buffers)."
    with torch.device('meta'): got = tuple(n_params(AttnNetD(32, 256, s, sn=True)) for s in (64, 128, 256))
    assert got == (1_878_242, 5_155_810, 18_264_546)


def test_load_official_dmgan(tmp_path):
    "A released generator file (bare state dict, official keys) loads with its sizes inferred and gives the official image."
    from t2i_nb.official import load_official
    set_seed(2)
    cfg = GANConfig(img_size=128, nf=4, cond_dim=256, z_dim=100, n_res=3, official_mask=True)
    sd = _dm_state(DMNetG(cfg))
    torch.save(sd, tmp_path/'bird_DMGAN.pth')
    G = load_official(tmp_path/'bird_DMGAN.pth', 'dmgan')
    assert isinstance(G, DMNetG) and G.cfg == cfg
    z, sent, words = torch.randn(2, 100), torch.randn(2, 256), torch.randn(2, 256, 4)
    mask = torch.tensor([[False] * 4, [False, False, True, True]])
    torch.manual_seed(5); ours = G(z, sent, words, mask)
    torch.manual_seed(5); ref = ref_dmgan(sd, z, sent, words, mask, 4)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)
    with pytest.raises(T2IError, match="DM-GAN generator .*'dmgan'"): load_official(tmp_path/'bird_DMGAN.pth', 'attngan')
    torch.save(_random_state(AttnNetG(cfg)), tmp_path/'attn.pth')
    with pytest.raises(T2IError, match="AttnGAN generator .*'attngan'"): load_official(tmp_path/'attn.pth', 'dmgan')


def test_discriminators_are_spectral_normalised():
    "Every convolution but the heads' last ones is spectral-normalised; training steps keep each one's largest singular value near 1."
    set_seed(0)
    bb = DMGAN(GANConfig(img_size=32, n_stages=2, nf=4, nf_d=4, cond_dim=16, z_dim=8))
    convs = [m for m in bb.netsD.modules() if isinstance(m, torch.nn.Conv2d)]
    sn = [m for m in convs if hasattr(m, 'parametrizations')]
    assert len(sn) == len(convs) - 2 * len(bb.netsD) and all(m.bias is not None for m in sn)
    opt = torch.optim.Adam(bb.d_parameters(), lr=1e-3)
    s, words, mask = torch.randn(4, 16), torch.randn(4, 16, 5), torch.zeros(4, 5, dtype=torch.bool)
    for _ in range(20):
        with torch.no_grad(): fake = bb.generate(torch.randn(4, 8), s, words, mask)
        opt.zero_grad(); bb.d_loss(torch.rand(4, 3, 32, 32) * 2 - 1, fake, s)[0].backward(); opt.step()
    for m in sn:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert 0.8 < sigma < 1.2


@pytest.mark.parametrize('cls', [AttnNetG, DMNetG])
def test_own_mask_keeps_an_image_independent_of_its_batch(cls):
    "With each caption's own padding mask (the default for networks trained here) a caption's image does not depend on the other captions' lengths; the official tiling does."
    set_seed(0)
    z, sent, words = torch.randn(3, 8), torch.randn(3, 16), torch.randn(3, 16, 6)
    a = torch.tensor([[False] * 6, [False] * 4 + [True] * 2, [False] * 2 + [True] * 4])
    b = a.clone(); b[2] = False                                   # only the third caption's length differs
    for official in (False, True):
        G = cls(GANConfig(img_size=32, nf=4, cond_dim=16, z_dim=8, official_mask=official)).eval()
        torch.manual_seed(1); ia = G(z, sent, words, a)
        torch.manual_seed(1); ib = G(z, sent, words, b)
        assert torch.equal(ia[0], ib[0]) != official
