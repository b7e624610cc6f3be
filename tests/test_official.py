"""Faithfulness of the published backbones: our generators against a transcription of each official forward pass.

The reference functions below work on the *official* state dict (official key names) with torch.nn.functional
only, written from reading the official code (tobran/DF-GAN code/models/GAN.py; wtliao/text2image model.py),
so that no module of ours is involved in the reference. `load_official` then has to give the same image, in eval
mode, for the same weights and inputs."""
import pytest, torch
import torch.nn.functional as F
from t2i_nb.core import T2IError, set_seed
from t2i_nb.models import GANConfig, n_params, layout_params, build_backbone
from t2i_nb.backbones.dfgan import DFGAN
from t2i_nb.backbones.ssa import SSA
from t2i_nb.official import load_official, load_official_backbone, read_official

torch.set_num_threads(1)


def _random_state(layout, gain=1.):
    "Random weights in an official layout (variance-preserving scale), BatchNorm statistics valid (positive variances)."
    sd = {}
    for k, shape in layout.items():
        if len(shape) >= 2:
            sd[k] = torch.randn(shape) * gain / torch.tensor(shape[1:]).prod().sqrt(); continue
        if k.endswith('num_batches_tracked'): sd[k] = torch.tensor(3)
        elif k.endswith('running_var'): sd[k] = torch.rand(shape) + 0.5
        elif k.endswith('running_mean'): sd[k] = torch.randn(shape) * 0.1
        elif k.endswith('gamma') and len(shape) == 1 and shape[0] == 1: sd[k] = torch.rand(shape) + 0.5   # residual gates open
        else: sd[k] = torch.randn(shape) * 0.1
    return sd


# ---------------------------------------------------------------- DF-GAN, transcribed from the official NetG.forward
def _mlp(sd, p, y): return F.linear(F.relu(F.linear(y, sd[p + 'linear1.weight'], sd[p + 'linear1.bias'])), sd[p + 'linear2.weight'], sd[p + 'linear2.bias'])

def _dfgan_affine(sd, p, x, y):
    w, b = _mlp(sd, p + 'fc_gamma.', y), _mlp(sd, p + 'fc_beta.', y)
    return w[..., None, None].expand(x.size()) * x + b[..., None, None].expand(x.size())

def ref_dfgan(sd, noise, c, ngf):
    out = F.linear(noise, sd['fc.weight'], sd['fc.bias']).view(noise.size(0), 8 * ngf, 4, 4)
    cond = torch.cat((noise, c), dim=1)
    i = 0
    while f'GBlocks.{i}.c1.weight' in sd:
        b = f'GBlocks.{i}.'
        x = F.interpolate(out, scale_factor=2)
        def dfblk(h, p):
            h = F.leaky_relu(_dfgan_affine(sd, p + 'affine0.', h, cond), 0.2)
            return F.leaky_relu(_dfgan_affine(sd, p + 'affine1.', h, cond), 0.2)
        h = F.conv2d(dfblk(x, b + 'fuse1.'), sd[b + 'c1.weight'], sd[b + 'c1.bias'], padding=1)
        h = F.conv2d(dfblk(h, b + 'fuse2.'), sd[b + 'c2.weight'], sd[b + 'c2.bias'], padding=1)
        sc = F.conv2d(x, sd[b + 'c_sc.weight'], sd[b + 'c_sc.bias']) if b + 'c_sc.weight' in sd else x
        out = sc + h
        i += 1
    return torch.tanh(F.conv2d(F.leaky_relu(out, 0.2), sd['to_rgb.1.weight'], sd['to_rgb.1.bias'], padding=1))


@pytest.mark.parametrize('size, nf', [(32, 8), (64, 4), (128, 4)])
def test_dfgan_image_equals_official_forward(tmp_path, size, nf):
    set_seed(0)
    cfg = GANConfig(img_size=size, nf=nf)
    sd = _random_state(DFGAN.official_layout(cfg)['netG'])
    torch.save({'model': {'netG': {'module.' + k: v for k, v in sd.items()}}}, tmp_path/'state_epoch_1.pth')
    G = load_official(tmp_path/'state_epoch_1.pth', 'dfgan')
    torch.manual_seed(7); z, s = torch.randn(3, 100), torch.randn(3, 256)
    with torch.no_grad(): ours, ref = G(z, s), ref_dfgan(sd, z, s, nf)
    assert 0.05 < ref.std() and (ref.abs() < 0.99).float().mean() > 0.5   # not a flat or saturated image
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)


# ---------------------------------------------------------------- SSA-GAN, transcribed from the official NetG.forward
def _bn(sd, p, x, affine=True):
    return F.batch_norm(x, sd[p + 'running_mean'], sd[p + 'running_var'], sd[p + 'weight'] if affine else None,
                        sd[p + 'bias'] if affine else None, False, 0., 1e-5)

def _ssa_mask(sd, p, x):
    h = F.relu(_bn(sd, p + '1.', F.conv2d(x, sd[p + '0.weight'], sd[p + '0.bias'], padding=1)))
    return F.conv2d(h, sd[p + '3.weight'], sd[p + '3.bias'])

def _ssa_affine(sd, p, x, y, fusion_mask):
    x = _bn(sd, p + 'batch_norm2d.', x, affine=False)
    weight, bias = _mlp(sd, p + 'fc_gamma.', y), _mlp(sd, p + 'fc_beta.', y)
    weight = weight[..., None, None].expand(x.size()) * fusion_mask + 1
    bias = bias[..., None, None].expand(x.size()) * fusion_mask
    return weight * x + bias

def _ssa_block(sd, i, x, y, fusion_mask):
    b = f'block{i}.'
    h = F.conv2d(F.relu(_ssa_affine(sd, b + 'affine0.', x, y, fusion_mask)), sd[b + 'c1.weight'], sd[b + 'c1.bias'], padding=1)
    h = F.conv2d(F.relu(_ssa_affine(sd, b + 'affine2.', h, y, fusion_mask)), sd[b + 'c2.weight'], sd[b + 'c2.bias'], padding=1)
    sc = F.conv2d(x, sd[b + 'c_sc.weight'], sd[b + 'c_sc.bias']) if b + 'c_sc.weight' in sd else x
    out = sc + sd[b + 'gamma'] * h
    return out, (_ssa_mask(sd, b + 'conv_mask.', out) if b + 'conv_mask.0.weight' in sd else None)

def ref_ssa(sd, x, c, ngf):
    out = F.linear(x, sd['fc.weight'], sd['fc.bias']).view(x.size(0), 8 * ngf, 4, 4)
    fusion_mask = torch.sigmoid(_ssa_mask(sd, 'conv_mask.', out))
    out, stage_mask = _ssa_block(sd, 0, out, c, fusion_mask)
    i = 1
    while f'block{i}.c1.weight' in sd:
        out = F.interpolate(out, scale_factor=2)
        stage_mask = F.interpolate(stage_mask, size=out.shape[-2:], mode='bilinear', align_corners=True)
        out, stage_mask = _ssa_block(sd, i, out, c, torch.sigmoid(stage_mask))
        i += 1
    out = F.leaky_relu(_bn(sd, 'conv_img.0.', out), 0.2)
    return torch.tanh(F.conv2d(out, sd['conv_img.2.weight'], sd['conv_img.2.bias'], padding=1))


@pytest.mark.parametrize('size, nf', [(32, 8), (64, 4), (128, 2)])
def test_ssa_image_equals_official_forward(tmp_path, size, nf):
    set_seed(0)
    cfg = GANConfig(img_size=size, nf=nf)
    sd = _random_state(SSA.official_layout(cfg)['netG'])
    torch.save({'module.' + k: v for k, v in sd.items()}, tmp_path/'netG_600.pth')   # DataParallel, bare, as the trainer saves it
    G = load_official(tmp_path/'netG_600.pth', 'ssa')
    assert G.cfg == cfg and not G.training
    torch.manual_seed(7); z, s = torch.randn(3, 100), torch.randn(3, 256)
    with torch.no_grad(): ours, ref = G(z, s), ref_ssa(sd, z, s, nf)
    assert 0.05 < ref.std() and (ref.abs() < 0.99).float().mean() > 0.5
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)


# ---------------------------------------------------------------- parameter counts at the papers' settings
@pytest.mark.parametrize('size', [64, 128, 256])
def test_dfgan_parameter_counts_equal_official(size):
    cfg = GANConfig(img_size=size, nf=32)
    lay = DFGAN.official_layout(cfg)
    with torch.device('meta'): bb = DFGAN(cfg)
    for part in ('netG', 'netD', 'netC'): assert n_params(getattr(bb, part)) == layout_params(lay[part]), part


def test_ssa_parameter_counts_equal_official():
    cfg = GANConfig(img_size=256, nf=64)
    lay = SSA.official_layout(cfg)
    with torch.device('meta'): bb = SSA(cfg)
    assert n_params(bb.netG) == layout_params(lay['netG'])
    assert n_params(bb.netD, bb.netC) == layout_params(lay['netD'])
    assert len(lay['netG']) == len(bb.netG.state_dict())          # buffers too: every key of the official state dict
    # the official generator at 256 px, nf 64: 7 blocks, 6 of them predict a mask, widths 512 ... 64
    assert sum(k.endswith('c1.weight') for k in lay['netG']) == 7 and sum(k.endswith('conv_mask.3.bias') for k in lay['netG']) == 7


def test_official_discriminator_round_trip(tmp_path):
    "DF-GAN's checkpoint also holds D and C: they load into our netD/netC under the official names' mapping."
    set_seed(1)
    cfg = GANConfig(img_size=64, nf=4)
    lay = DFGAN.official_layout(cfg)
    sd = {p: _random_state(lay[p]) for p in lay}
    torch.save({'model': sd, 'optimizers': {}, 'epoch': 3}, tmp_path/'ck.pth')
    bb, parts = load_official_backbone(tmp_path/'ck.pth', 'dfgan')
    assert parts == ['netG', 'netD', 'netC']
    assert torch.equal(bb.netD.stem.weight, sd['netD']['conv_img.weight'])
    assert torch.equal(bb.netD.blocks[3].shortcut.weight, sd['netD']['DBlocks.3.conv_s.weight'])   # the official unused conv_s too
    x, s = torch.randn(2, 3, 64, 64), torch.randn(2, 256)
    with torch.no_grad(): assert bb.netC(bb.netD(x), s).shape == (2,)


@pytest.mark.parametrize('bad, msg', [({'fc.weight': torch.zeros(4, 100)}, 'this is not an official DF-GAN netG'),
                                      ([1, 2, 3], 'holds no netG state dict: found a list')])
def test_wrong_files_are_one_line_errors(tmp_path, bad, msg):
    torch.save(bad, tmp_path/'x.pth')
    with pytest.raises(T2IError, match=msg) as e: load_official(tmp_path/'x.pth', 'dfgan')
    assert '\n' not in str(e.value)


def test_ssa_file_as_dfgan_names_expected_and_found(tmp_path):
    cfg = GANConfig(img_size=32, nf=4)
    torch.save(_random_state(SSA.official_layout(cfg)['netG']), tmp_path/'netG.pth')
    with pytest.raises(T2IError, match="this is not an official DF-GAN netG state dict.*for --arch dfgan"): load_official(tmp_path/'netG.pth', 'dfgan')
