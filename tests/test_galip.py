"""GALIP against a transcription of the official forward pass (tobran/GALIP code/models/GALIP.py: NetG, CLIP_Adapter,
CLIP_Mapper, M_Block, G_Block, CLIP_IMG_ENCODER, NetD, D_Block, NetC), written with torch.nn.functional on the official
state dict and OpenAI's [L, B, D] token layout; parameter counts at the paper's setting; load_official('galip')."""
import math, pytest, torch
import torch.nn.functional as F
from t2i_nb.core import set_seed, T2IError
from t2i_nb.models import GANConfig, n_params, layout_params, build_backbone
from t2i_nb.clip import build_clip, small_clip_config
from t2i_nb.backbones.galip import GALIP, galip_blocks
from t2i_nb.official import load_official, load_official_backbone
from test_official import _random_state

torch.set_num_threads(1)
MEAN, STD = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])


# ---------------------------------------------------------------- OpenAI's ViT pieces, [L, B, D]
def _ln(sd, p, x): return F.layer_norm(x, x.shape[-1:], sd[p + 'weight'], sd[p + 'bias'])

def _resblock(sd, p, x):
    "OpenAI's ResidualAttentionBlock on x [L, B, D] (heads of 64 channels, QuickGELU)."
    L, B, D = x.shape
    H = D // 64
    q, k, v = F.linear(_ln(sd, p + 'ln_1.', x), sd[p + 'attn.in_proj_weight'], sd[p + 'attn.in_proj_bias']).chunk(3, -1)
    heads = lambda t: t.reshape(L, B * H, D // H).transpose(0, 1)
    a = torch.softmax(heads(q) @ heads(k).transpose(1, 2) / math.sqrt(D // H), -1) @ heads(v)
    x = x + F.linear(a.transpose(0, 1).reshape(L, B, D), sd[p + 'attn.out_proj.weight'], sd[p + 'attn.out_proj.bias'])
    h = F.linear(_ln(sd, p + 'ln_2.', x), sd[p + 'mlp.c_fc.weight'], sd[p + 'mlp.c_fc.bias'])
    return x + F.linear(h * torch.sigmoid(1.702 * h), sd[p + 'mlp.c_proj.weight'], sd[p + 'mlp.c_proj.bias'])

def _tokens(sd, p, x):
    "conv1's output [B, D, g, g] -> [L, B, D] (class token, positions, ln_pre), as CLIP_Mapper / CLIP_IMG_ENCODER.forward."
    B, D = x.shape[:2]
    x = x.reshape(B, D, -1).permute(0, 2, 1)
    x = torch.cat([sd[p + 'class_embedding'] + torch.zeros(B, 1, D), x], 1) + sd[p + 'positional_embedding']
    return _ln(sd, p + 'ln_pre.', x).permute(1, 0, 2)


# ---------------------------------------------------------------- the generator
def _affine(sd, p, x, y):
    mlp = lambda q: F.linear(F.relu(F.linear(y, sd[q + 'linear1.weight'], sd[q + 'linear1.bias'])), sd[q + 'linear2.weight'], sd[q + 'linear2.bias'])
    w, b = mlp(p + 'fc_gamma.'), mlp(p + 'fc_beta.')
    return w.unsqueeze(-1).unsqueeze(-1).expand(x.size()) * x + b.unsqueeze(-1).unsqueeze(-1).expand(x.size())

def _dfblk(sd, p, x, y): return F.leaky_relu(_affine(sd, p + 'affine1.', F.leaky_relu(_affine(sd, p + 'affine0.', x, y), 0.2), y), 0.2)
def _conv(sd, p, x, pad, bias=True): return F.conv2d(x, sd[p + 'weight'], sd[p + 'bias'] if bias else None, padding=pad)

def ref_netG(sd, noise, c, prompted, out_size, layers):
    B, W = len(noise), sd['mapping.conv_fuse.weight'].shape[0]
    g = math.isqrt(sd['fc_code.weight'].shape[0] // 64)
    cond = torch.cat((noise, c), 1)
    out = F.linear(noise, sd['fc_code.weight'], sd['fc_code.bias']).view(B, 64, g, g)
    prompts = F.linear(cond, sd['mapping.fc_prompt.weight'], sd['mapping.fc_prompt.bias']).view(B, -1, W)
    for i in range(4):                                                    # M_Block: conv, fuse, conv, fuse (+ identity)
        p = f'mapping.FBlocks.{i}.'
        h = _dfblk(sd, p + 'fuse1.', _conv(sd, p + 'conv1.', out, 1), cond)
        out = out + _dfblk(sd, p + 'fuse2.', _conv(sd, p + 'conv2.', h, 1), cond)
    fuse = _conv(sd, 'mapping.conv_fuse.', out, 2)
    x, k = _tokens(sd, 'mapping.CLIP_ViT.', fuse), 0
    for i in range(layers):                                               # CLIP_Mapper.forward
        p = f'mapping.CLIP_ViT.transformer.resblocks.{i}.'
        if i in prompted:
            x = _resblock(sd, p, torch.cat((x, prompts[:, k, :].unsqueeze(0)), 0))[:-1]; k += 1
        else: x = _resblock(sd, p, x)
    mapped = x.permute(1, 0, 2)[:, 1:, :].permute(0, 2, 1).reshape(-1, W, g, g)
    out = _conv(sd, 'mapping.conv.', fuse + 0.1 * mapped, 2)
    i, size = 0, 4
    while f'GBlocks.{i}.c1.weight' in sd:                                 # G_Block
        p = f'GBlocks.{i}.'
        size = size * 2 if f'GBlocks.{i + 1}.c1.weight' in sd else out_size
        h = F.interpolate(out, size=(size, size))
        sc = _conv(sd, p + 'c_sc.', h, 0) if p + 'c_sc.weight' in sd else h
        r = _conv(sd, p + 'c1.', _dfblk(sd, p + 'fuse1.', h, cond), 1)
        out = sc + _conv(sd, p + 'c2.', _dfblk(sd, p + 'fuse2.', r, cond), 1)
        i += 1
    return _conv(sd, 'to_rgb.1.', F.leaky_relu(out, 0.2), 1)            # no tanh


# ---------------------------------------------------------------- the discriminator
def ref_clip_img(sd, post, img, tapped, layers, size):
    "CLIP_IMG_ENCODER.forward: sd holds the ViT (official netG names), post its ln_post / proj."
    x = F.interpolate(img * 0.5 + 0.5, size=(size, size))
    x = ((x + 1) * 0.5 - MEAN[None, :, None, None]) / STD[None, :, None, None]
    p = 'mapping.CLIP_ViT.'
    x = F.conv2d(x, sd[p + 'conv1.weight'], stride=sd[p + 'conv1.weight'].shape[-1])
    g, W = x.shape[-1], x.shape[1]
    x, feats = _tokens(sd, p, x), {}
    for i in range(layers):
        x = _resblock(sd, f'{p}transformer.resblocks.{i}.', x)
        if i in tapped: feats[i] = x.permute(1, 0, 2)[:, 1:, :].permute(0, 2, 1).reshape(-1, W, g, g)
    emb = _ln(post, 'ln_post.', x.permute(1, 0, 2)[:, 0, :]) @ post['proj']
    return torch.stack([feats[i] for i in tapped], 1), emb

def _dblock(sd, p, x, clip_feat=None):
    r = F.leaky_relu(_conv(sd, p + 'conv_r.2.', F.leaky_relu(_conv(sd, p + 'conv_r.0.', x, 1, False), 0.2), 1, False), 0.2)
    fout, fin = sd[p + 'conv_r.0.weight'].shape[:2]
    if fin != fout: x = _conv(sd, p + 'conv_s.', x, 0)                   # learned_shortcut only
    out = x + sd[p + 'gamma'] * r
    return out + sd[p + 'beta'] * clip_feat if clip_feat is not None else out

def ref_logits(sd_d, sd_c, h, sent):
    out = h[:, 0]
    for i in range(h.shape[1] - 1): out = _dblock(sd_d, f'DBlocks.{i}.', out, h[:, i + 1])
    out = _dblock(sd_d, 'main.', out)
    g = out.shape[-1]
    x = torch.cat((out, sent.view(len(sent), -1, 1, 1).repeat(1, 1, g, g)), 1)
    return F.conv2d(F.leaky_relu(F.conv2d(x, sd_c['joint_conv.0.weight']), 0.2), sd_c['joint_conv.2.weight']).view(-1)


def _official_state(cfg, clip=None):
    lay = GALIP.official_layout(cfg, clip)
    sd = {part: _random_state(lay[part]) for part in lay}
    for k in sd['netD']:
        if k.endswith(('gamma', 'beta')): sd['netD'][k] = torch.rand(1) + 0.5      # the gates open
    for k in sd['netG']:
        if k.endswith(('ln_1.weight', 'ln_2.weight', 'ln_pre.weight')): sd['netG'][k] = 1 + 0.1 * torch.randn(sd['netG'][k].shape)
    return sd


def _check(bb, sd, prompted, tapped, layers):
    z, s = torch.randn(3, bb.cfg.z_dim), torch.randn(3, bb.cfg.cond_dim)
    with torch.no_grad():
        ours, ref = bb.netG(z, s, clamp=False), ref_netG(sd['netG'], z, s, prompted, bb.out_size, layers)
        assert 0.02 < ref.std() and ref.abs().mean() < 5                   # not flat, not exploded
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)
        torch.testing.assert_close(bb.netG(z, s), ref.clamp(-1, 1), rtol=0, atol=1e-4)
        img = torch.rand(3, 3, bb.cfg.img_size, bb.cfg.img_size) * 2 - 1
        post = {'ln_post.weight': bb.clip_img.ln_post.weight, 'ln_post.bias': bb.clip_img.ln_post.bias, 'proj': bb.clip_img.proj}
        feats, emb = bb.clip_img(img)
        rf, re_ = ref_clip_img(sd['netG'], post, img, tapped, layers, bb.out_size)
        torch.testing.assert_close(feats, rf, rtol=0, atol=1e-4); torch.testing.assert_close(emb, re_, rtol=0, atol=1e-4)
        lo = ref_logits(sd['netD'], sd['netC'], rf, s)
        assert lo.std() > 1e-3
        torch.testing.assert_close(bb.netC(bb.netD(feats), s), lo, rtol=0, atol=1e-4 * max(1., lo.abs().max().item()))


def test_load_official_equals_official_forward(tmp_path):
    "A DDP-saved official checkpoint (small stand-in CLIP: 4 blocks, width 128, grid 8) loads whole and gives the official image and logits."
    set_seed(0)
    cfg = GANConfig(img_size=32, nf=4, cond_dim=16, z_dim=8)
    sd = _official_state(cfg)
    torch.save({'model': {p: {'module.' + k: v for k, v in sd[p].items()} for p in sd}, 'epoch': 1}, tmp_path/'state_epoch_001.pth')
    bb, parts = load_official_backbone(tmp_path/'state_epoch_001.pth', 'galip')
    assert parts == ['netG', 'netD', 'netC'] and bb.cfg == cfg
    assert torch.equal(bb.clip_img.transformer.resblocks[2].mlp.c_fc.weight, sd['netG']['mapping.CLIP_ViT.transformer.resblocks.2.mlp.c_fc.weight'])
    _check(bb.eval(), sd, (0, 1, 2), (0, 1, 2), 4)                      # the depth rule for 4 blocks
    G = load_official(tmp_path/'state_epoch_001.pth', 'galip')
    assert not G.training


def test_official_block_indices_with_12_blocks():
    "With a 12-block CLIP the prompted (1..8) and tapped (1, 4, 8) blocks are the official ones."
    set_seed(1)
    clip = build_clip(small_clip_config(image_size=32, width=64, layers=12, embed_dim=16))
    cfg = GANConfig(img_size=32, nf=4, cond_dim=16, z_dim=8)
    sd = _official_state(cfg, clip)
    bb = GALIP(cfg, clip=clip)
    conv = {}
    for part in sd: conv |= GALIP.from_official(sd[part], part, cfg, clip=clip)[1]
    bb.load_state_dict(conv)
    assert (bb.prompt_blocks, bb.tap_blocks) == (tuple(range(1, 9)), (1, 4, 8))
    _check(bb.eval(), sd, tuple(range(1, 9)), (1, 4, 8), 12)


def test_parameter_counts_equal_official():
    "Paper setting (nf 64, 256 -> 224 px, cond 512) on a random ViT-B/32 (meta): the counts of the official constructors."
    cfg = GANConfig(img_size=256, nf=64, cond_dim=512, z_dim=100)
    with torch.device('meta'): bb = GALIP(cfg, clip='ViT-B-32')
    assert bb.out_size == 224 and (bb.prompt_blocks, bb.tap_blocks) == (tuple(range(1, 9)), (1, 4, 8))
    assert sum(p.numel() for p in bb.g_parameters()) == 51_830_211
    assert (n_params(bb.netG), n_params(bb.netD), n_params(bb.netC)) == (139_284_675, 28_706_821, 2_099_200)
    lay = GALIP.official_layout(cfg)
    assert [layout_params(lay[p]) for p in ('netG', 'netD', 'netC')] == [139_284_675, 28_706_821, 2_099_200]
    assert {k: tuple(v.shape) for k, v in bb.netD.state_dict().items()} == lay['netD']
    assert {k: tuple(v.shape) for k, v in bb.netG.state_dict().items()} == {k: v for k, v in lay['netG'].items() if 'CLIP_ViT' not in k}


def test_frozen_clip_not_saved_and_not_trained():
    set_seed(0)
    bb = build_backbone('galip', GANConfig(img_size=32, nf=4, cond_dim=16, z_dim=8))
    sd = bb.state_dict()
    assert not any('CLIP_ViT' in k or k.startswith('clip_img.') for k in sd)
    assert bb.upgrade_state_dict(dict(sd)).keys() == sd.keys()
    bb.load_state_dict(sd)
    ids = {id(p) for k, p in bb.clip_img.named_parameters() if not k.startswith(('ln_post', 'proj'))}
    assert ids <= {id(p) for p in bb.netG.parameters()}                   # one CLIP, shared by G's bridge and D's encoder
    ids |= {id(p) for p in bb.clip_img.parameters()}                      # (+ ln_post and proj: D's encoder only)
    assert not ids & {id(p) for p in bb.g_parameters() + bb.d_parameters()}
    bb.train(); assert not bb.clip_img.training and bb.netG.training


def test_wrong_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(T2IError, match='must equal the CLIP'): GALIP(GANConfig(img_size=32, cond_dim=32), clip=small_clip_config(32, embed_dim=16))
    with pytest.raises(T2IError, match=r"CLIP's input size \(32 px\)"): GALIP(GANConfig(img_size=128, cond_dim=16), clip=small_clip_config(32, embed_dim=16))
    cfg = GANConfig(img_size=32, nf=4, cond_dim=16, z_dim=8)
    sd = _official_state(cfg, small_clip_config(image_size=32, width=64, layers=2, embed_dim=16))
    torch.save({'model': {'netG': sd['netG']}}, tmp_path/'g.pth')
    with pytest.raises(T2IError, match=r'carries a CLIP ViT .* build GALIP\(cfg, clip=...\)'): load_official(tmp_path/'g.pth', 'galip')
    with pytest.raises(T2IError, match='not an official GALIP netG'): GALIP.from_official({'fc.weight': torch.zeros(2, 2)})
