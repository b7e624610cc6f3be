"""AttnGAN's generator against a transcription of the official forward pass (taoxugit/AttnGAN code/model.py,
GlobalAttention.py), written with torch.nn.functional on the official state dict, and its parameter counts against
the numbers computed from the official constructors (tools/research/attngan_dmgan_official.md)."""
import pytest, torch
import torch.nn.functional as F
from t2i_nb.core import set_seed
from t2i_nb.models import GANConfig, n_params
from t2i_nb.backbones.attngan import AttnNetG

torch.set_num_threads(1)


def _glu(x): nc = x.size(1) // 2; return x[:, :nc] * torch.sigmoid(x[:, nc:])
def _bn(sd, p, x): return F.batch_norm(x, sd[p + 'running_mean'], sd[p + 'running_var'], sd[p + 'weight'], sd[p + 'bias'], False, 0., 1e-5)
def _up(sd, p, x): return _glu(_bn(sd, p + '2.', F.conv2d(F.interpolate(x, scale_factor=2, mode='nearest'), sd[p + '1.weight'], padding=1)))

def ref_init_stage(sd, z, sent, g, c_dim=100):
    "CA_NET, INIT_STAGE_G and the first image (both repositories): `(h, img)`."
    x = _glu(F.linear(sent, sd['ca_net.fc.weight'], sd['ca_net.fc.bias']))
    mu, logvar = x[:, :c_dim], x[:, c_dim:]
    std = logvar.mul(0.5).exp_()
    eps = torch.FloatTensor(std.size()).normal_()                  # CA_NET.reparametrize on the CPU
    c_code = eps.mul(std).add_(mu)
    h = _glu(_bn(sd, 'h_net1.fc.1.', F.linear(torch.cat((c_code, z), 1), sd['h_net1.fc.0.weight']))).view(-1, 16 * g, 4, 4)
    for k in range(1, 5): h = _up(sd, f'h_net1.upsample{k}.', h)
    return h, torch.tanh(F.conv2d(h, sd['img_net1.img.0.weight'], padding=1))

def ref_stage_tail(sd, p, h_c):
    "A NEXT_STAGE_G's residual blocks (no activation after the sum) and up-sampling block (both repositories)."
    r = 0
    while f'{p}residual.{r}.block.0.weight' in sd:
        q = f'{p}residual.{r}.block.'
        out = _glu(_bn(sd, q + '1.', F.conv2d(h_c, sd[q + '0.weight'], padding=1)))
        h_c = _bn(sd, q + '4.', F.conv2d(out, sd[q + '3.weight'], padding=1)) + h_c
        r += 1
    return _up(sd, p + 'upsample.', h_c)

def ref_attngan(sd, z, sent, words, mask, g, c_dim=100):
    h, img = ref_init_stage(sd, z, sent, g, c_dim)
    i = 2
    while f'h_net{i}.att.conv_context.weight' in sd:
        p = f'h_net{i}.'
        B, idf, ih, iw = h.shape
        Q, T = ih * iw, words.size(2)
        targetT = h.view(B, -1, Q).transpose(1, 2).contiguous()
        sourceT = F.conv2d(words.unsqueeze(3), sd[p + 'att.conv_context.weight']).squeeze(3)
        attn = torch.bmm(targetT, sourceT).view(B * Q, T)
        attn.data.masked_fill_(mask.repeat(Q, 1), -float('inf'))  # the official tiling (issue 93)
        attn = torch.softmax(attn, dim=1).view(B, Q, T).transpose(1, 2).contiguous()
        h = ref_stage_tail(sd, p, torch.cat((h, torch.bmm(sourceT, attn).view(B, -1, ih, iw)), 1))
        img = torch.tanh(F.conv2d(h, sd[f'img_net{i}.img.0.weight'], padding=1))
        i += 1
    return img


def _random_state(G):
    sd = {}
    for k, v in G.state_dict().items():
        if k.endswith('num_batches_tracked'): sd[k] = torch.tensor(5)
        elif k.endswith('running_var'): sd[k] = torch.rand(v.shape) + 0.5
        elif k.endswith('running_mean'): sd[k] = torch.randn(v.shape) * 0.1
        elif v.ndim >= 2: sd[k] = torch.randn(v.shape) / torch.tensor(v.shape[1:]).prod().sqrt()
        else: sd[k] = torch.randn(v.shape) * 0.1 + (1. if k.endswith('.weight') else 0.)
    return sd


@pytest.mark.parametrize('size', [64, 128, 256])
def test_image_equals_official_forward(size):
    set_seed(0)
    cfg = GANConfig(img_size=size, nf=4, cond_dim=256, z_dim=100, official_mask=True)
    G = AttnNetG(cfg).eval()
    sd = _random_state(G)
    G.load_state_dict(sd)
    z, sent, words = torch.randn(3, 100), torch.randn(3, 256), torch.randn(3, 256, 7)
    mask = torch.tensor([[False] * 7, [False] * 5 + [True] * 2, [False] * 3 + [True] * 4])   # unequal lengths: the tiling matters
    torch.manual_seed(11); ours = G(z, sent, words, mask)
    torch.manual_seed(11); ref = ref_attngan(sd, z, sent, words, mask, 4)
    assert 0.02 < ref.std() and (ref.abs() < 0.99).float().mean() > 0.5   # not a flat or saturated image
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize('nf, n_res, want', [(32, 2, 7_084_592), (48, 3, 13_811_456)])   # CUB (bird_attn2.yml), COCO (coco_attn2.yml)
def test_parameter_counts_equal_official(nf, n_res, want):
    with torch.device('meta'): G = AttnNetG(GANConfig(img_size=256, nf=nf, cond_dim=256, z_dim=100, n_res=n_res))
    assert n_params(G) == want


@pytest.mark.parametrize('ndf, want', [(64, (6_313_730, 19_424_002, 71_858_946)),     # CUB: DF_DIM 64
                                       (96, (13_304_450, 42_800_258, 160_774_274))])  # COCO: DF_DIM 96
def test_discriminator_parameter_counts_equal_official(ndf, want):
    from t2i_nb.backbones.attngan import AttnNetD
    with torch.device('meta'): got = tuple(n_params(AttnNetD(ndf, 256, s)) for s in (64, 128, 256))
    assert got == want


@pytest.mark.parametrize('text', ['damsm', 'dte'])
def test_system_trains_attngan(text):
    "T2IGAN with the AttnGAN backbone: a few D and G steps on a tiny 128 px batch lower both losses; the frozen encoders stay put."
    from t2i_nb.encoders import RNNEncoder, CNNEncoder, TextEmbedConfig
    from t2i_nb.gan import T2IGAN, T2IConfig
    set_seed(0)
    V, B, S = 30, 4, 128
    cfg = T2IConfig(backbone='attngan', text=text, gan=GANConfig(img_size=S, nf=4, nf_d=4, cond_dim=32, z_dim=16),
                    dte=TextEmbedConfig(ntoken=V, ninput=16, nhidden=32))
    m = T2IGAN(cfg, RNNEncoder(V, ninput=16, nhidden=32), CNNEncoder(nef=32, img_size=S, nf=4), n_classes=2)
    g = torch.Generator().manual_seed(0)
    batch = (torch.rand(B, 3, S, S, generator=g) * 2 - 1, torch.randint(2, V, (B, 6), generator=g), torch.tensor([6, 5, 4, 3]),
             torch.tensor([0, 1, 0, 1]), torch.arange(B))
    opt_d = torch.optim.Adam(m.d_parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(m.g_parameters(), lr=2e-4, betas=(0.5, 0.999))
    def d_eval(): torch.manual_seed(1); return m.d_loss(batch)[0].item()
    def g_eval(): torch.manual_seed(1); return m.g_loss(batch)[0].item()
    d0 = d_eval()
    for _ in range(5): torch.manual_seed(1); opt_d.zero_grad(); m.d_loss(batch)[0].backward(); opt_d.step()
    assert d_eval() < d0
    g0 = g_eval()
    for _ in range(5): torch.manual_seed(1); opt_g.zero_grad(); m.g_loss(batch)[0].backward(); opt_g.step()
    assert g_eval() < g0
    with torch.no_grad(): assert m.generate(batch[1], batch[2]).shape == (B, 3, S, S)


def test_load_official_attngan(tmp_path):
    "A released generator file (bare state dict, official keys) loads with its sizes inferred and gives the official image."
    from t2i_nb.official import load_official
    set_seed(2)
    cfg = GANConfig(img_size=128, nf=4, cond_dim=256, z_dim=100, n_res=3, official_mask=True)
    sd = _random_state(AttnNetG(cfg))
    torch.save(sd, tmp_path/'netG_epoch_600.pth')
    G = load_official(tmp_path/'netG_epoch_600.pth', 'attngan')
    assert G.cfg == cfg
    z, sent, words = torch.randn(2, 100), torch.randn(2, 256), torch.randn(2, 256, 4)
    mask = torch.tensor([[False] * 4, [False, False, True, True]])
    torch.manual_seed(5); ours = G(z, sent, words, mask)
    torch.manual_seed(5); ref = ref_attngan(sd, z, sent, words, mask, 4)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)
