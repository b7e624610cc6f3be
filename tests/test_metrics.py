"Tests for t2i_nb.metrics that do not fit the notebook: metric wrappers, the standard Inception, the oracle's logic and cache."
import os
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from t2i_nb.core import T2IError
from t2i_nb.shapes import make_shapes, make_shapes_multi, SHAPES, COLOURS
from t2i_nb.metrics import (FeatureExtractor, ImageMetrics, InceptionFeatures, find_inception_weights, INCEPTION_FILES,
                            AttrEvaluator, EvaluatorConfig, EvaluatorFeatures, VALUES, attribute_targets, builtin_splits,
                            check_trusted, trusted_attributes, get_evaluator, evaluator_key, load_evaluator, save_evaluator,
                            oracle_scores, score_predictions, asked_attributes, split_tensors, eval_markdown, TRUST_THRESHOLD)

torch.set_num_threads(1)


class Toy(FeatureExtractor):
    name, num_features, num_classes = 'toy', 48, 5
    def __init__(self, logits=None):
        super().__init__(); self.logits, self.calls = logits, 0
    def extract(self, x):
        self.calls += 1
        f = F.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1)
        return f, (torch.zeros(len(x), 5) if self.logits is None else self.logits(x))


def rand_images(n, seed, size=16):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------------------------------------------------------------- metric wrappers
def test_fid_of_a_set_with_itself_is_zero_and_is_of_uniform_logits_is_one():
    x = rand_images(40, 0)
    m = ImageMetrics(Toy(), device='cpu')
    for i in range(0, 40, 16): m.update(x[i:i + 16], real=True); m.update(x[i:i + 16], real=False)
    r = m.compute()
    assert abs(r['fid']) < 1e-3
    assert r['is'] == pytest.approx(1.0, abs=1e-6) and r['is_real'] == pytest.approx(1.0, abs=1e-6)
    assert (r['n_real'], r['n_fake']) == (40, 40)


def test_kid_keys_and_subset_size_shrinks_to_the_sample():
    m = ImageMetrics(Toy(), kid_subset_size=1000, kid_subsets=20, device='cpu')
    m.update(rand_images(30, 0), True); m.update((rand_images(12, 1) + 0.6).clamp(-1, 1), False)
    r = m.compute()
    assert r['kid_subset_size'] == 12 and isinstance(r['kid'], float) and r['kid_std'] >= 0
    assert r['kid'] > 0.01 and r['fid'] > 1        # a shifted distribution is clearly apart


def test_uint8_and_float_inputs_agree_and_one_forward_feeds_all_metrics():
    x = rand_images(8, 2)
    ext = Toy()
    m = ImageMetrics(ext, device='cpu')
    m.update(x, True)
    assert ext.calls == 1                            # FID, KID and IS share one forward pass
    from t2i_nb.core import to_uint8
    a, b = ImageMetrics(Toy(), device='cpu'), ImageMetrics(Toy(), device='cpu')
    for mm, inp in ((a, x), (b, to_uint8(x))):
        mm.update(inp, True); mm.update(inp.flip(0), False)
    assert a.compute()['fid'] == pytest.approx(b.compute()['fid'], abs=1e-6)


def test_is_of_confident_spread_logits_is_the_number_of_classes():
    m = ImageMetrics(Toy(lambda x: 40. * F.one_hot(torch.arange(len(x)) % 5, 5).float()), is_splits=1, device='cpu')
    m.update(rand_images(20, 0), True); m.update(rand_images(20, 1), False)
    assert m.compute()['is'] == pytest.approx(5.0, rel=1e-4)


def test_too_few_images_and_bad_shapes_are_one_line_errors():
    m = ImageMetrics(Toy(), device='cpu')
    m.update(rand_images(1, 0), True)
    with pytest.raises(T2IError, match='at least 2 real and 2 generated'): m.compute()
    with pytest.raises(T2IError, match=r'\[B, 3, H, W\]'): m.update(torch.zeros(2, 1, 8, 8), True)


# ---------------------------------------------------------------- standard Inception from a local file
@pytest.fixture(scope='module')
def inception_file(tmp_path_factory):
    "Randomly initialised weights in the layout of pt_inception-2015-12-05-6726825d.pth (torchvision Inception3, 1008 classes)."
    pytest.importorskip('torch_fidelity')
    import torchvision
    m = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    p = tmp_path_factory.mktemp('inc')/INCEPTION_FILES[0]
    torch.save(m.state_dict(), p)
    return p


def test_inception_features_from_a_local_file(inception_file, monkeypatch):
    monkeypatch.delenv('T2I_FID_WEIGHTS', raising=False)
    ext = InceptionFeatures(inception_file)
    f, lg = ext.extract(torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8))
    assert f.shape == (3, 2048) and lg.shape == (3, 1008)
    x = rand_images(4, 0, 32)
    m = ImageMetrics(ext, device='cpu')
    m.update(x, True); m.update(x, False)
    assert abs(m.compute()['fid']) < 1e-2
    monkeypatch.setenv('T2I_FID_WEIGHTS', str(inception_file))
    assert find_inception_weights() == inception_file


def test_inception_bad_files_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.delenv('T2I_FID_WEIGHTS', raising=False)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path/'hub'))
    with pytest.raises(T2IError, match='--inception_weights PATH or set T2I_FID_WEIGHTS'): find_inception_weights()
    with pytest.raises(T2IError, match='no Inception weights file at'): find_inception_weights(tmp_path/'missing.pth')
    pytest.importorskip('torch_fidelity')
    (tmp_path/'junk.pth').write_bytes(b'not a torch file')
    with pytest.raises(T2IError, match='cannot read'): InceptionFeatures(tmp_path/'junk.pth')
    torch.save({'fc.weight': torch.zeros(2, 2)}, tmp_path/'other.pth')
    with pytest.raises(T2IError, match='not the FID Inception-v3'): InceptionFeatures(tmp_path/'other.pth')


# ---------------------------------------------------------------- the oracle: trust, scoring, cache
def test_trust_threshold_logic():
    acc = {'shape': 0.975, 'colour': 1.0, 'size': 0.98, 'position': 0.999}
    ok, refused = trusted_attributes(acc)
    assert ok == ['colour', 'size', 'position'] and list(refused) == ['shape']    # exactly 98 % passes
    assert '97.5%' in refused['shape'] and '\n' not in refused['shape']
    with pytest.raises(T2IError, match='shape right on only 97.5%'): check_trusted(acc)
    assert check_trusted(acc, attrs=['colour', 'size']) is acc
    assert check_trusted(acc, threshold=0.9) is acc
    assert TRUST_THRESHOLD == 0.98


@pytest.fixture(scope='module')
def tiny_sets(tmp_path_factory):
    d = tmp_path_factory.mktemp('sets')
    return make_shapes(d/'shapes', n=200, size=32, seed=0), make_shapes_multi(d/'multi', n=120, size=32, seed=0)


def _truth_predictions(ds, kind):
    "What a perfect evaluator would predict for the items of `ds` (from their ground truth)."
    rows = [attribute_targets(s.attrs, kind) for s in ds.items]
    if kind == 'shapes': return {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}
    return {k: torch.tensor([r[k] for r in rows]).bool() for k in rows[0]}


@pytest.mark.parametrize('kind', ['shapes', 'shapes-multi'])
def test_a_perfect_evaluator_scores_every_real_caption_right(tiny_sets, kind):
    "Captions, the caption parser and the scoring agree with the ground truth: the oracle's ceiling is exactly 1."
    root = tiny_sets[0] if kind == 'shapes' else tiny_sets[1]
    _, test_ds = builtin_splits(root)
    pred = _truth_predictions(test_ds, kind)
    for c in range(len(test_ds[0].captions)):
        caps = [s.captions[c] for s in test_ds.items]
        sc = score_predictions(pred, caps, kind)
        assert sc['all']['accuracy'] == 1.0, sc
        assert all(v['accuracy'] in (None, 1.0) for v in sc.values())
    if kind == 'shapes':    # a wrong colour everywhere: colour 0, the rest untouched
        bad = {**pred, 'colour': (pred['colour'] + 1) % len(COLOURS)}
        sc = score_predictions(bad, [s.captions[0] for s in test_ds.items], kind)
        assert sc['colour']['accuracy'] == 0.0 and sc['shape']['accuracy'] == 1.0


def test_only_mentioned_attributes_are_scored():
    assert asked_attributes('a shape') == {}
    pred = {'shape': torch.tensor([0]), 'colour': torch.tensor([0]), 'size': torch.tensor([0]), 'position': torch.tensor([0])}
    sc = score_predictions(pred, ['a big red circle'], 'shapes')      # large is index 1: wrong; position unsaid
    assert sc['size'] == {'accuracy': 0.0, 'n': 1, 'by_value': {'large': 0.0}}
    assert sc['position'] == {'accuracy': None, 'n': 0, 'by_value': {}}
    assert sc['all'] == {'accuracy': 0.0, 'n': 1}


def test_scores_by_value_say_which_shapes_fail():
    pred = {'shape': torch.tensor([0, 0, 2, 1]), 'colour': torch.zeros(4, dtype=torch.long),
            'size': torch.zeros(4, dtype=torch.long), 'position': torch.zeros(4, dtype=torch.long)}
    sc = score_predictions(pred, ['a circle', 'a square', 'a triangle', 'a square'], 'shapes')
    assert sc['shape']['by_value'] == {'circle': 1.0, 'square': 0.5, 'triangle': 1.0}
    assert sc['shape']['accuracy'] == 0.75 and sc['shape']['n'] == 4
    assert 'by_value' not in score_predictions({'shapes': torch.ones(1, len(SHAPES)), 'colours': torch.ones(1, len(COLOURS))},
                                               ['a red circle'], 'shapes-multi')['shapes']


def test_oracle_scores_checks_lengths():
    ev = AttrEvaluator('shapes', 32, nf=4)
    with pytest.raises(T2IError, match='2 images but 1 captions'): oracle_scores(ev, torch.zeros(2, 3, 32, 32), ['a circle'])


def test_evaluator_cache_key_file_and_reload(tiny_sets, tmp_path):
    root = tiny_sets[0]
    cfg = EvaluatorConfig(nf=4, epochs=1, n_extra=50)
    ev, rep = get_evaluator(root, 32, cfg, cache_dir=tmp_path, device='cpu', log=None)
    path = tmp_path/f'evaluator_{evaluator_key(root, 32, cfg)}.pth'
    assert path.is_file() and rep['path'] == str(path) and set(rep['accuracy']) == {'shape', 'colour', 'size', 'position'}
    assert rep['n_train'] == len(builtin_splits(root)[0]) + 50 and rep['n_test'] == len(builtin_splits(root)[1])
    ev2, rep2 = load_evaluator(path)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(ev2(x), ev(x))
    assert rep2 == rep
    ev3, _ = get_evaluator(root, 32, cfg, cache_dir=tmp_path, device='cpu', log=None)      # cached: same weights
    torch.testing.assert_close(ev3(x), ev(x))
    # another version of the data set, size or configuration: another key
    other = make_shapes(tmp_path/'other', n=200, size=32, seed=1)
    keys = {evaluator_key(root, 32, cfg), evaluator_key(other, 32, cfg), evaluator_key(root, 64, cfg),
            evaluator_key(root, 32, cfg.replace(nf=8))}
    assert len(keys) == 4
    # a damaged cache file is retrained, not a crash
    path.write_bytes(b'garbage')
    msgs = []
    get_evaluator(root, 32, cfg, cache_dir=tmp_path, device='cpu', log=msgs.append)
    assert any('retraining' in m for m in msgs) and load_evaluator(path)[0] is not None


def test_evaluator_file_is_weights_only(tmp_path):
    class Evil:
        def __reduce__(self): return (os.system, ('touch ' + str(tmp_path/'pwned'),))
    torch.save({'format': 't2i_nb.evaluator/1', 'x': Evil()}, tmp_path/'evil.pth')
    with pytest.raises(T2IError, match='cannot read the evaluator'): load_evaluator(tmp_path/'evil.pth')
    assert not (tmp_path/'pwned').exists()


def test_multi_evaluator_heads_and_targets(tiny_sets):
    tr, te = builtin_splits(tiny_sets[1])
    x, y = split_tensors(te, 32)
    assert x.shape == (len(te), 3, 32, 32) and y['shapes'].shape == (len(te), len(SHAPES))
    assert bool((y['shapes'].sum(1) == torch.tensor([len({o['shape'] for o in s.attrs['objects']}) for s in te.items])).all())
    ev = AttrEvaluator('shapes-multi', 32, nf=4)
    ef = EvaluatorFeatures(ev)
    f, lg = ef.extract(x[:2])
    assert f.shape == (2, 256) and lg.shape == (2, len(SHAPES))


def test_eval_markdown_renders_every_section():
    res = {'run': 'r', 'model': 'dte', 'scl': 'supcon', 'img_size': 32, 'dataset': 'shapes', 'step': 10, 'n_samples': 8,
           'seed': 0, 'n_real': 4, 'split': 'test',
           'image_metrics': {'evaluator': {'features': 'evaluator (shapes, 32px)', 'fid': 1.5, 'kid': 0.002, 'kid_std': 0.001,
                                           'kid_subset_size': 4, 'is': 3.0, 'is_std': 0.1, 'is_real': 9.0, 'is_real_std': 0.2,
                                           'is_splits': 4}},
           'oracle': {'generated': {'colour': {'accuracy': 0.5, 'n': 8}}, 'real': {'colour': {'accuracy': 1.0, 'n': 4}},
                      'refused': {'shape': 'x'}, 'evaluator': {'accuracy': {'shape': 0.9, 'colour': 1.0}, 'threshold': 0.98, 'img_size': 32}},
           'r_precision': {'generated': 0.1, 'generated_std': 0.01, 'real': 0.5, 'real_std': 0.02}, 'notes': ['shape withheld']}
    md = eval_markdown(res)
    for s in ('| FID (evaluator (shapes, 32px)) | 1.50 |', 'KID x 1000', '| oracle: colour | 50.0% | 100.0% |',
              '| R-precision | 10.0% +- 1.0% | 50.0% +- 2.0% |', '- shape withheld'):
        assert s in md, s


# ---------------------------------------------------------------- the real evaluator (minutes: opt in with T2I_SLOW=1)
@pytest.mark.skipif(not os.environ.get('T2I_SLOW'), reason='trains the default 64 px evaluator (~2-4 min on one CPU thread): set T2I_SLOW=1')
def test_default_evaluator_reads_real_test_images_at_98_percent(tmp_path):
    root = make_shapes(tmp_path/'shapes', n=2000, size=64, seed=0)
    ev, rep = get_evaluator(root, 64, device='cpu', log=None)
    check_trusted(rep['accuracy'])
    _, test_ds = builtin_splits(root)
    x, _ = split_tensors(test_ds, 64)
    sc = oracle_scores(ev, x, [s.captions[0] for s in test_ds.items])
    assert sc['all']['accuracy'] >= 0.98, sc
