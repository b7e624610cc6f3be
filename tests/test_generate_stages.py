"""`t2i_nb.generate` on multi-stage generators with word attention (AttnGAN): every path of the module draws from the
caption's words and padding mask too, images are reproducible (CA's noise is seeded, each image drawn as if alone),
and `generate_stages`, `stage_grid`, `attention_maps` and `t2i_generate --stages` show the stages and the attention.
Runs: a tiny AttnGAN (128 px: 2 stages, width 4) and a tiny DF-GAN, 2 training steps each through `t2i_train`."""
import numpy as np
import pytest, torch
import torch.nn.functional as F
from PIL import Image

from t2i_nb.core import T2IError
from t2i_nb.train import t2i_train
from t2i_nb.generate import (generate, load_generator, render, caption_conditions, embed_captions, Conditions, ca_noise,
                             truncated_noise, interpolate_captions, interpolate_noise, edit_caption, edit_success, default_edits,
                             DemoState, demo_render, demo_widget, generate_stages, Stages, stage_grid, attention_maps,
                             caption_words, t2i_generate, _CACHE)

torch.set_num_threads(1)
CAPS = ['a large red star in the top left corner', 'a small blue circle']   # 9 and 4 words: different padding
TINY = dict(bs=4, nf=4, ckpt_every=0, quiet=True, scl='none', device='cpu')


@pytest.fixture(scope='module')
def runs(tmp_path_factory, tiny_shapes):
    d, (root, enc) = tmp_path_factory.mktemp('stages'), tiny_shapes
    t2i_train(out=str(d/'attn'), root=str(root), steps=2, backbone='attngan', text='damsm', encoders=str(enc), img_size=128, **TINY)
    t2i_train(out=str(d/'df'), root=str(root), steps=2, backbone='dfgan', text='damsm', encoders=str(enc), img_size=32, **TINY)
    return dict(attn=d/'attn', df=d/'df', root=root, tmp=d)


def _zdim(run) -> int: return load_generator(run).z_dim


def _official_masks(run):
    return [m.official_mask for m in load_generator(run).netG.modules() if hasattr(m, 'official_mask')]


def test_generate_attngan_is_reproducible_and_batch_independent(runs):
    a = runs['attn']
    for m in load_generator(a).netG.modules():                           # (loading builds networks: it draws from torch's RNG)
        if hasattr(m, 'official_mask'): m.official_mask = True           # as an imported official generator has it
    state = torch.get_rng_state()
    g = generate(a, CAPS, n=3, seed=0)
    assert g.images.shape == (6, 3, 128, 128) and g.images.min() >= -1 and g.images.max() <= 1
    assert torch.equal(torch.get_rng_state(), state)                     # the caller's random state is left alone
    torch.manual_seed(123)                                               # CA's noise comes from the seed, not torch's RNG
    assert torch.equal(generate(a, CAPS, n=3, seed=0).images, g.images)
    assert not torch.equal(generate(a, CAPS, n=3, seed=1).images, g.images)
    # each image as if alone: the official mask tiling would mix the two captions' padding in one batch
    torch.testing.assert_close(generate(a, CAPS, n=3, seed=0, batch_size=1).images, g.images, atol=1e-5, rtol=0)
    torch.testing.assert_close(generate(a, CAPS[1], n=2, seed=0).images, g.images[3:5], atol=1e-5, rtol=0)
    assert _official_masks(a) and all(_official_masks(a))                # the generator's own setting is put back
    for m in load_generator(a).netG.modules():
        if hasattr(m, 'official_mask'): m.official_mask = False          # the default of a run trained here


def test_ca_noise_is_used_and_seeded(runs):
    a = runs['attn']
    eps = ca_noise(a, 3, truncation=0.5, seed=4)
    assert eps.shape == (3, 100) and eps.abs().max() <= 0.5
    assert torch.equal(eps[:2], ca_noise(a, 2, truncation=0.5, seed=4))   # row j from the stream (seed, j, 1)
    assert not torch.equal(eps[:, :16], truncated_noise(3, 16, 0.5, seed=4))   # another stream than z's
    assert ca_noise(runs['df'], 3) is None                               # DF-GAN has no conditioning augmentation
    cond, z = caption_conditions(a, CAPS), truncated_noise(2, _zdim(a))
    e0 = torch.zeros(2, 100)                                             # eps = 0: the code is mu
    torch.manual_seed(0); c0 = render(a, cond, z, ca_noise=e0)
    torch.manual_seed(1); assert torch.equal(render(a, cond, z, ca_noise=e0), c0)   # eps given: torch's RNG plays no part
    assert not torch.equal(render(a, cond, z, ca_noise=eps[:2]), c0)
    torch.manual_seed(5); r1 = render(a, cond, z)                        # without ca_noise: torch's RNG, as officially
    torch.manual_seed(5); r2 = render(a, cond, z)
    torch.manual_seed(6); r3 = render(a, cond, z)
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)


def test_conditions_and_render_need_words(runs):
    a = runs['attn']
    cond = caption_conditions(a, CAPS)
    assert isinstance(cond, Conditions) and len(cond) == 2
    assert cond.sent.shape == (2, 32) and cond.words.shape == (2, 32, 18) and cond.pad.dtype == torch.bool
    assert cond.pad.sum(1).tolist() == [18 - 9, 18 - 4]
    assert torch.equal(embed_captions(a, CAPS), cond.sent)
    assert torch.equal(cond.take([1, 1]).words, cond.words[[1, 1]]) and len(cond.take(slice(0, 1))) == 1
    with pytest.raises(T2IError, match='word features'): render(a, cond.sent, truncated_noise(2, _zdim(a)))
    with pytest.raises(T2IError, match='3 CA noise vectors but 2'): render(a, cond, truncated_noise(2, _zdim(a)), ca_noise=torch.zeros(3, 100))


def test_dfgan_results_unchanged(runs):
    "DF-GAN runs draw exactly what the sentence-only path drew before: `netG(z, S_G)`."
    d = runs['df']
    g = generate(d, CAPS, n=2, seed=3)
    loaded = load_generator(d)
    s, z = embed_captions(d, CAPS), truncated_noise(2, loaded.z_dim, 1.0, 3)
    with torch.no_grad(): want = loaded.netG(z.repeat(2, 1), s.repeat_interleave(2, 0)).clamp(-1, 1)
    assert torch.equal(g.images, want)
    strip = interpolate_captions(d, 'a red star', 'a small blue circle', steps=3)
    assert 'words' not in strip.meta                                     # only attention generators read words


def test_interpolate_captions_words(runs):
    a = runs['attn']
    same = interpolate_captions(a, 'a large red star', 'a large blue star', steps=3, seed=2)
    diff = interpolate_captions(a, 'a red star', 'a small blue circle in the top left corner', steps=4, seed=2)
    assert (same.meta['words'], diff.meta['words']) == ('interpolated', 'nearer caption')
    for s in (same, diff):
        ca, cb = s.meta['captions']
        torch.testing.assert_close(s.images[0], generate(a, ca, seed=2).images[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(s.images[-1], generate(a, cb, seed=2).images[0], atol=1e-5, rtol=0)
    # t = 1/3 and 2/3: the sentence interpolated, the words of the nearer caption
    cond, t = caption_conditions(a, diff.meta['captions']), torch.tensor(diff.meta['t'])
    z, eps = truncated_noise(1, _zdim(a), 1.0, 2).expand(4, -1), ca_noise(a, 1, 1.0, 2).expand(4, -1)
    near = torch.tensor([0, 0, 1, 1])
    want = render(a, Conditions(torch.lerp(cond.sent[:1], cond.sent[1:], t[:, None]), cond.words[near], cond.pad[near]), z, ca_noise=eps)
    torch.testing.assert_close(diff.images, want, atol=1e-5, rtol=0)
    # same number of words: the word features are interpolated position by position
    cs, t3 = caption_conditions(a, same.meta['captions']), torch.tensor(same.meta['t'])
    mid = Conditions(torch.lerp(cs.sent[:1], cs.sent[1:], 0.5), torch.lerp(cs.words[:1], cs.words[1:], 0.5), cs.pad[:1])
    torch.testing.assert_close(same.images[1:2], render(a, mid, z[:1], ca_noise=eps[:1]), atol=1e-5, rtol=0)


def test_noise_walk_edit_and_demo(runs):
    a = runs['attn']
    walk = interpolate_noise(a, 'a small green ring', steps=3, seed=3)
    g2 = generate(a, 'a small green ring', n=2, seed=3)
    torch.testing.assert_close(walk.images[0], g2.images[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(walk.images[-1], g2.images[1], atol=1e-4, rtol=0)
    e = edit_caption(a, 'a large red star', 'red', 'blue', n=2, seed=1)
    torch.testing.assert_close(e.after.images, generate(a, 'a large blue star', n=2, seed=1).images, atol=1e-5, rtol=0)
    img = demo_render(a, DemoState('a red star', 'a small blue circle', alpha=0.7, n=2))
    assert img.size[0] >= 2 * 128
    assert demo_render(a, DemoState('a red star', n=2)).tobytes() == demo_render(a, DemoState('a red star', n=2)).tobytes()
    w = demo_widget(a, DemoState(n=1))
    assert w.image.value[:4] == b'\x89PNG' and w.status.value == ''


def test_edit_success_runs_on_attngan(runs):
    from t2i_nb.metrics import get_evaluator, EvaluatorConfig
    ev = get_evaluator(runs['root'], 128, cfg=EvaluatorConfig(nf=4, epochs=1, n_extra=40), device='cpu', log=None)
    r = edit_success(runs['attn'], default_edits(per_attr=1), n=1, evaluator=ev, threshold=0.)
    assert (r['n'], r['n_edits']) == (4, 4) and 0 <= r['success'] <= 1


def test_generate_stages(runs):
    a = runs['attn']
    st = generate_stages(a, CAPS + ['a small teapot'], seed=0)
    assert isinstance(st, Stages) and st.sizes == [64, 128]
    assert [tuple(x.shape) for x in st.images] == [(3, 3, 64, 64), (3, 3, 128, 128)]
    assert len(st.attention) == 1 and st.attention[0].shape == (3, 18, 64, 64)
    assert st.words == [CAPS[0].split(), CAPS[1].split(), ['a', 'small', 'teapot?']]
    att = st.attention[0]
    torch.testing.assert_close(att.sum(1), torch.ones(3, 64, 64), atol=1e-5, rtol=0)
    for i, w in enumerate(st.words): assert att[i, len(w):].abs().max() == 0 and att[i, :len(w)].min() > 0
    torch.testing.assert_close(st.images[-1][:2], generate(a, CAPS, seed=0).images, atol=1e-5, rtol=0)
    # the stages are the generator's own outputs for the same inputs
    cond, loaded = caption_conditions(a, CAPS[1]), load_generator(a)
    z, eps = truncated_noise(1, _zdim(a)), ca_noise(a, 1)
    h = loaded.netG.ca_net.register_forward_hook(lambda m, i, o: (eps * o[2].mul(0.5).exp() + o[1], o[1], o[2]))
    try:
        with torch.no_grad(): imgs, atts, _, _ = loaded.netG(z, cond.sent, cond.words, cond.pad, return_all=True)
    finally: h.remove()
    torch.testing.assert_close(st.images[0][1:2], imgs[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(st.attention[0][1:2], atts[0], atol=1e-5, rtol=0)
    up = st.upsampled()
    assert up.shape == (3, 2, 3, 128, 128) and torch.equal(up[:, 1], st.images[1])
    assert torch.equal(up[:, 0], F.interpolate(st.images[0], scale_factor=2, mode='nearest'))
    assert 'Stages(3 caption(s): 64px -> 128px, attention over 64x64' in repr(st)


def test_single_stage_runs_refuse(runs):
    for f in (lambda: generate_stages(runs['df'], CAPS), lambda: stage_grid(runs['df'], CAPS), lambda: attention_maps(runs['df'], CAPS[0])):
        with pytest.raises(T2IError, match='in one stage: stages and word attention need a multi-stage run'): f()
    with pytest.raises(T2IError, match='one caption'): attention_maps(runs['attn'], CAPS)


def test_stage_grid_figure(runs):
    fig = stage_grid(runs['attn'], CAPS, seed=0)
    assert len(fig.axes) == 2 * 2
    assert [ax.get_title() for ax in fig.axes] == ['stage 1: 64 px', 'stage 2: 128 px', '', '']
    assert [ax.get_ylabel().replace('\n', ' ') for ax in fig.axes[::2]] == CAPS
    st = generate_stages(runs['attn'], CAPS, seed=0)
    for k, ax in enumerate(fig.axes):
        arr = ax.images[0].get_array()
        assert arr.shape == (128, 128, 3)                                 # every stage scaled to the final size
        assert torch.allclose(torch.as_tensor(np.asarray(arr)), ((st.upsampled()[k // 2, k % 2] + 1) / 2).permute(1, 2, 0), atol=1e-6)


def test_attention_maps_figure(runs):
    cap = 'a large red star in the top left corner'
    fig = attention_maps(runs['attn'], cap, seed=0)
    words = cap.split()
    assert len(fig.axes) == 1 + len(words) + 1                          # the image, a column per word, the colour bar
    assert [ax.get_title() for ax in fig.axes[:1 + len(words)]] == ['image'] + words
    assert 'stage 2: 128 px' in fig.axes[0].get_ylabel() and '64x64' in fig.axes[0].get_ylabel()
    att = generate_stages(runs['attn'], cap, seed=0).attention[0]
    for k in range(len(words)):
        ax = fig.axes[1 + k]
        assert len(ax.images) == 2 and ax.images[0].get_array().shape == (128, 128, 3)
        want = F.interpolate(att[:, k:k + 1], size=(128, 128), mode='bilinear', align_corners=False)[0, 0]
        assert torch.allclose(torch.as_tensor(np.asarray(ax.images[1].get_array())), want, atol=1e-6)
    vmax = float(F.interpolate(att[:, :len(words)], size=(128, 128), mode='bilinear', align_corners=False).max())
    assert {ax.images[1].get_clim() for ax in fig.axes[1:1 + len(words)]} == {(0., vmax)}   # one scale per row


def test_caption_words_match_encoding(runs):
    voc = load_generator(runs['attn']).vocab
    for c in CAPS + ['a blue teapot star', 'a ' * 30]:
        toks, lens = voc.encode_batch([c])
        assert len(caption_words(voc, c)) == int(lens[0])


def test_cli_stages(runs, capsys):
    out = runs['tmp']/'cli'/'grid.png'
    t2i_generate(captions=CAPS, run=str(runs['attn']), n=2, out=str(out), device='cpu', stages=True)
    assert sorted(p.name for p in out.parent.iterdir()) == ['grid.png', 'grid_attention_1.png', 'grid_attention_2.png', 'grid_stages.png']
    assert Image.open(out).size == generate(runs['attn'], CAPS, n=2).grid().size
    assert all(Image.open(p).format == 'PNG' for p in out.parent.iterdir())
    assert 'stages 64px -> 128px' in capsys.readouterr().out
    t2i_generate(captions=CAPS[:1], run=str(runs['df']), n=1, out=str(runs['tmp']/'df.png'), device='cpu')   # no --stages: as before
    assert (runs['tmp']/'df.png').exists() and not (runs['tmp']/'df_stages.png').exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        t2i_generate(captions=CAPS, run=str(runs['df']), out=str(runs['tmp']/'df2.png'), device='cpu', stages=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith('error: ') and 'multi-stage run' in err[0]
    assert not any(runs['tmp'].glob('df2*'))                            # refused before anything is written
