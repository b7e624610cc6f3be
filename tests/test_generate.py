"""Tests of `t2i_nb.generate` on a tiny run made by the real training job (2 steps of a width-8 DTE-GAN at 32 px)."""
import os, time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from t2i_nb.core import T2IError
from t2i_nb.shapes import make_shapes, SHAPES, COLOURS, SIZES, POSITIONS
from t2i_nb.models import GANConfig
from t2i_nb.encoders import TextEmbedConfig
from t2i_nb.gan import T2IConfig
from t2i_nb.train import TrainConfig, train, load_run
from t2i_nb.generate import (generate, load_generator, LoadedRun, truncated_noise, interpolate_captions, interpolate_noise,
                             edit_caption, replace_word, edit_success, default_edits, score_edits, edit_target, DemoState, demo_render,
                             demo_status, demo_widget, bench_generate, newest_run, embed_captions, Generated, _CACHE)

CAPS = ['a large red star in the top left corner', 'a small blue circle']


def tiny_config(root, steps=2):
    return TrainConfig(dataset='shapes', root=str(root), bs=8, steps=steps, ckpt_every=0, n_samples=4, precision='fp32',
                       net=T2IConfig(text='dte', gan=GANConfig(img_size=32, nf=8, z_dim=16, cond_dim=32),
                                     dte=TextEmbedConfig(ninput=16, nhidden=32)))


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('gen')
    root = make_shapes(tmp / 'shapes', n=80, size=32, seed=0)
    run_dir = tmp / 'runs' / 'tiny'
    learn = train(tiny_config(root), run_dir, device='cpu', progress=False, log=lambda *a: None)
    return dict(root=root, run=run_dir, learn=learn, tmp=tmp)


def test_generate_shapes_range_and_pil(tiny):
    g = generate(tiny['run'], CAPS, n=3, seed=0, device='cpu')
    assert isinstance(g, Generated) and g.images.shape == (6, 3, 32, 32) and g.images.dtype == torch.float32
    assert g.images.min() >= -1 and g.images.max() <= 1 and g.images.device.type == 'cpu'
    assert g.captions == [CAPS[0]] * 3 + [CAPS[1]] * 3 and g.unknown == {}
    assert [im.size for im in g.pil] == [(32, 32)] * 6 and g.pil[0].mode == 'RGB'
    assert g.grid().size == g.grid(ncol=3).size
    p = g.save(tiny['tmp'] / 'g.png')
    assert p.read_bytes()[:4] == b'\x89PNG'
    assert 'Generated(6 images of 32px: 2 caption(s) x 3' in repr(g)


def test_deterministic_for_a_seed(tiny):
    a = generate(tiny['run'], CAPS, n=3, seed=7)
    assert torch.equal(a.images, generate(tiny['run'], CAPS, n=3, seed=7).images)
    assert not torch.equal(a.images, generate(tiny['run'], CAPS, n=3, seed=8).images)
    torch.testing.assert_close(generate(tiny['run'], CAPS, n=3, seed=7, batch_size=1).images, a.images, atol=1e-5, rtol=0)
    # noise j depends on (seed, j) only: fewer images, or one caption alone, give the same first images
    torch.testing.assert_close(generate(tiny['run'], CAPS[1], n=2, seed=7).images, a.images[3:5], atol=1e-5, rtol=0)


def test_truncation(tiny):
    z = truncated_noise(500, 16, 0.7, seed=3)
    assert z.abs().max() <= 0.7 and torch.equal(truncated_noise(5, 16, 0.7, seed=3), z[:5])
    assert truncated_noise(500, 16, None, seed=3).abs().max() > 1.5
    assert torch.equal(truncated_noise(4, 16, 0, seed=3), truncated_noise(4, 16, None, seed=3))
    a = generate(tiny['run'], CAPS[0], n=2, truncation=0.5).images
    b = generate(tiny['run'], CAPS[0], n=2, truncation=None).images
    assert not torch.equal(a, b)
    with pytest.raises(T2IError, match='truncation must be positive'): generate(tiny['run'], CAPS[0], truncation=-1)


def test_run_forms_give_the_same_images(tiny):
    ref = generate(tiny['run'], CAPS, n=2).images
    learn = tiny['learn']
    learn.model.train()
    torch.testing.assert_close(generate(learn, CAPS, n=2).images, ref, atol=1e-6, rtol=0)
    assert learn.model.training                                   # the mode is put back
    loaded = load_run(tiny['run'], device='cpu')
    torch.testing.assert_close(generate(loaded, CAPS, n=2).images, ref, atol=1e-6, rtol=0)
    # a bare system uses its own (non-EMA) generator: it needs the vocabulary
    with pytest.raises(T2IError, match='pass vocab='): generate(loaded[0], CAPS)
    assert generate(loaded[0], CAPS, n=2, vocab=loaded[3]).images.shape == (4, 3, 32, 32)


def test_cache_reloads_a_newer_checkpoint(tiny, tmp_path):
    _CACHE.clear()
    a = load_generator(tiny['run'], 'cpu')
    assert load_generator(tiny['run'], 'cpu') is a
    ck = tiny['run'] / 'checkpoint.pt'
    st = ck.stat(); os.utime(ck, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_generator(tiny['run'], 'cpu') is not a


def test_unknown_words_and_bad_captions(tiny):
    g = generate(tiny['run'], ['a large teapot', 'a red star'])
    assert g.unknown == {'a large teapot': ['teapot']} and len(g) == 2
    for bad, msg in [([], 'give at least one caption'), (['a red star', ''], 'caption 2 is empty'),
                     ('   ', 'caption 1 is empty'), ('zebra teapot', 'has no word in the vocabulary')]:
        with pytest.raises(T2IError, match=msg): generate(tiny['run'], bad)
    with pytest.raises(T2IError, match='at least 1'): generate(tiny['run'], 'a red star', n=0)


def test_bad_run_folders(tiny, tmp_path):
    with pytest.raises(T2IError, match='no run folder at'): generate(tmp_path / 'missing', 'a red star')
    (tmp_path / 'half').mkdir(); (tmp_path / 'half' / 'config.json').write_text('{}')
    with pytest.raises(T2IError, match='has no checkpoint.pt'): generate(tmp_path / 'half', 'a red star')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(T2IError, match='not a t2i_train run folder'): generate(tmp_path / 'empty', 'a red star')
    with pytest.raises(T2IError, match='cannot generate from a'): generate(3.5, 'a red star')


def test_newest_run(tiny, tmp_path):
    runs = tmp_path / 'runs'
    with pytest.raises(T2IError, match='no trained run under'): newest_run(runs)
    import shutil
    for name in ('b_old', 'a_new'): shutil.copytree(tiny['run'], runs / name)
    (runs / 'c_no_ckpt').mkdir(); (runs / 'c_no_ckpt' / 'config.json').write_text('{}')
    t = time.time()
    os.utime(runs / 'b_old' / 'checkpoint.pt', (t - 100, t - 100)); os.utime(runs / 'a_new' / 'checkpoint.pt', (t, t))
    assert newest_run(runs) == runs / 'a_new'


def test_interpolations_end_at_generate(tiny):
    strip = interpolate_captions(tiny['run'], 'a large red star', 'a large blue star', steps=4, seed=2)
    assert strip.images.shape == (4, 3, 32, 32) and np.allclose(strip.meta['t'], [0, 1 / 3, 2 / 3, 1])
    torch.testing.assert_close(strip.images[0], generate(tiny['run'], 'a large red star', seed=2).images[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(strip.images[-1], generate(tiny['run'], 'a large blue star', seed=2).images[0], atol=1e-5, rtol=0)
    # the middle uses the mixed embedding
    s = embed_captions(tiny['run'], ['a large red star', 'a large blue star'])
    assert not torch.allclose(s[0], s[1])
    walk = interpolate_noise(tiny['run'], 'a small green ring', steps=3, seed=2)
    g = generate(tiny['run'], 'a small green ring', n=2, seed=2).images
    torch.testing.assert_close(walk.images[0], g[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(walk.images[-1], g[1], atol=1e-5, rtol=0)
    with pytest.raises(T2IError, match='steps must be at least 2'): interpolate_noise(tiny['run'], 'a red star', steps=1)


def test_edit_caption(tiny):
    e = edit_caption(tiny['run'], 'a large red star in the top left corner', 'top left', 'bottom right', n=3, seed=1)
    assert e.edited == 'a large red star in the bottom right corner' and len(e.pairs) == 3
    both = generate(tiny['run'], [e.caption, e.edited], n=3, seed=1).images
    assert torch.equal(torch.cat([e.before.images, e.after.images]), both)
    assert e.grid().size[0] == e.before.grid().size[0]
    assert replace_word('Red star, red!', 'RED', 'blue') == 'blue star, blue!'
    with pytest.raises(T2IError, match="'red' is not a word"): replace_word('a reddish star', 'red', 'blue')


class StubEvaluator(torch.nn.Module):
    "Sees a large red star in the top left corner in every image."
    kind, multi_label, img_size = 'shapes', False, 32
    heads_spec = {'shape': len(SHAPES), 'colour': len(COLOURS), 'size': len(SIZES), 'position': len(POSITIONS)}
    def __init__(self):
        super().__init__(); self.w = torch.nn.Parameter(torch.zeros(1))
    def forward(self, x):
        hot = lambda vals, v: 10. * F.one_hot(torch.full((len(x),), vals.index(v)), len(vals)).float()
        return {'shape': hot(SHAPES, 'star'), 'colour': hot(COLOURS, 'red'), 'size': hot(SIZES, 'large'),
                'position': hot(POSITIONS, 'top left')}


def test_edit_success_with_a_stub_oracle(tiny):
    edits = [('a large red star in the top left corner', 'red', 'blue'),    # the image stays red: no success
             ('a large blue star in the top left corner', 'blue', 'red')]   # after is red, nothing else moves: success
    r = edit_success(tiny['run'], edits, n=3, evaluator=StubEvaluator())
    assert (r['success'], r['changed'], r['kept'], r['before_ok'], r['baseline'], r['n']) == (0.5, 0.5, 1.0, 0.5, 0.5, 6)
    assert r['kept_checked'] == ['colour', 'shape', 'size', 'position'] and r['refused'] == {}
    # attributes the evaluator is not trusted on are neither targets nor checked
    report = {'accuracy': {'shape': 0.5, 'colour': 1.0, 'size': 1.0, 'position': 1.0}}
    r2 = edit_success(tiny['run'], edits + [('a large red star', 'star', 'circle')], n=2, evaluator=(StubEvaluator(), report))
    assert r2['kept_checked'] == ['colour', 'size', 'position'] and r2['skipped_edits'] == 1 and 'shape' in r2['refused']
    with pytest.raises(T2IError, match='reads colour right on only'):
        edit_success(tiny['run'], edits, n=2, evaluator=(StubEvaluator(), {'accuracy': {**report['accuracy'], 'colour': 0.9}}))
    with pytest.raises(T2IError, match='must change exactly one'):
        edit_success(tiny['run'], [('a red star', 'star', 'teapot')], evaluator=StubEvaluator())


def test_score_edits_and_default_edits():
    red, blue = COLOURS.index('red'), COLOURS.index('blue')
    P = lambda **kw: {k: torch.tensor(v) for k, v in kw.items()}
    before = P(colour=[red, red], shape=[0, 0], size=[0, 0], position=[0, 0])
    after = P(colour=[blue, blue], shape=[0, 1], size=[0, 0], position=[0, 0])
    s = score_edits(before, after, [('colour', 'red', 'blue')] * 2, ['shape', 'size', 'position'])
    assert (s['success'], s['changed'], s['kept']) == (0.5, 1.0, 0.5)
    eds = default_edits(per_attr=3, seed=1)
    assert len(eds) == 12 and eds == default_edits(per_attr=3, seed=1)
    assert [edit_target(c, replace_word(c, o, w))[0] for c, o, w in eds] == [a for a in ('colour', 'shape', 'size', 'position') for _ in range(3)]


def test_edit_success_default_evaluator_needs_a_builtin_set(tiny):
    loaded = load_run(tiny['run'], 'cpu')
    with pytest.raises(T2IError, match='give evaluator='): edit_success(tiny['learn'], [('a red star', 'red', 'blue')])
    cub = LoadedRun(loaded[0], loaded[1], loaded[3], loaded[2].replace(dataset='cub'))
    with pytest.raises(T2IError, match='oracle of a built-in set'): edit_success(cub, [('a red star', 'red', 'blue')])


def test_demo_functions_and_widget(tiny):
    img = demo_render(tiny['run'], DemoState(caption='a small blue circle', n=2))
    assert img.mode == 'RGB' and img.width > 64
    a0 = demo_render(tiny['run'], {'caption': 'a red star', 'caption_b': 'a blue star', 'alpha': 0.0, 'n': 2})
    assert np.array_equal(np.asarray(a0), np.asarray(demo_render(tiny['run'], {'caption': 'a red star', 'n': 2})))
    a5 = demo_render(tiny['run'], {'caption': 'a red star', 'caption_b': 'a blue star', 'alpha': 0.5, 'n': 2})
    assert a5.size == a0.size and not np.array_equal(np.asarray(a5), np.asarray(a0))
    assert demo_status(tiny['run'], DemoState('a teapot')) == 'unknown words (drawn as the unknown token): teapot'
    assert demo_status(tiny['run'], DemoState('a red star')) == ''
    w = demo_widget(tiny['run'], DemoState(n=2))
    assert set(w.controls) == {'caption', 'caption_b', 'alpha', 'seed', 'truncation', 'n'}
    v0 = w.image.value
    w.controls['truncation'].value = 0.3
    assert w.image.value != v0 and w.image.value[:4] == b'\x89PNG'
    w.controls['caption'].value = ''
    assert 'empty' in w.status.value


def test_bench_generate_tiny():
    r = bench_generate(sizes=(32,), batch_sizes=(1, 2), nf=8, min_seconds=0.05, device='cpu')
    assert r['device'] == 'cpu' and [(x['size'], x['bs']) for x in r['results']] == [(32, 1), (32, 2)]
    assert all(x['img_per_s'] > 0 for x in r['results'])
