"R-precision by DM-GAN's official protocol (`t2i_nb.metrics.r_precision_dmgan`) on constructed codes with known answers, and `evaluate_run` on AttnGAN and multi-label runs."
import json
import pytest, torch
import torch.nn.functional as F
from t2i_nb.core import T2IError
from t2i_nb.metrics import r_precision_dmgan, other_class_draws, evaluate_run, EvaluatorConfig, eval_markdown
from t2i_nb.pretrain import r_precision

torch.set_num_threads(1)


def _codes(n, d=64, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_perfect_codes_score_one():
    caps, cls = _codes(3000), torch.arange(3000) % 50
    r = r_precision_dmgan(caps, caps, cls)
    assert (r['mean'], r['std'], r['n_folds'], r['fold_size'], r['n_candidates']) == (1.0, 0.0, 10, 300, 100)
    assert r['folds'] == [1.0] * 10 and r['min_other'] == 3000 - 60


def test_random_codes_score_one_in_a_hundred():
    r = r_precision_dmgan(_codes(6000, seed=1), _codes(6000), torch.arange(6000) % 50)
    assert abs(r['mean'] - 0.01) < 0.005 and 0 < r['std'] < 0.01
    r20 = r_precision_dmgan(_codes(6000, seed=1), _codes(6000), None, n_candidates=20)   # 1 in 20
    assert abs(r20['mean'] - 0.05) < 0.012


def test_deterministic_for_a_seed():
    img, txt, cls = _codes(500, seed=1), _codes(500), torch.arange(500) % 7
    a, b = r_precision_dmgan(img, txt, cls, seed=3), r_precision_dmgan(img, txt, cls, seed=3)
    assert a == b
    assert other_class_draws(cls, cls, 99, seed=3).tolist() == other_class_draws(cls, cls, 99, seed=3).tolist()
    assert not torch.equal(other_class_draws(cls, cls, 99, seed=3), other_class_draws(cls, cls, 99, seed=4))


def test_draws_are_other_class_and_uniform_over_images_then_captions():
    pool_labels, groups = torch.tensor([0, 0, 1, 1, 2, 2, 2]), torch.tensor([0, 0, 1, 2, 3, 3, 3])
    d = other_class_draws(torch.tensor([0, 1, 2]), pool_labels, 12000, pool_groups=groups)
    assert (pool_labels[d] != torch.tensor([0, 1, 2])[:, None]).all()
    freq = torch.stack([torch.bincount(r, minlength=7) for r in d]).double() / 12000
    want = torch.tensor([[0, 0, 4, 4, 4 / 3, 4 / 3, 4 / 3], [3, 3, 0, 0, 2, 2, 2], [2, 2, 4, 4, 0, 0, 0]]).double() / 12
    assert (freq - want).abs().max() < 0.02
    with pytest.raises(T2IError, match='one label'):
        other_class_draws(torch.tensor([0]), torch.tensor([1, 2]), 5, pool_groups=torch.tensor([0, 0]))


def test_fewer_images_than_folds():
    img, txt = _codes(25, seed=1), _codes(25)
    r = r_precision_dmgan(img, txt, None)
    assert (r['n_folds'], r['fold_size'], len(r['folds'])) == (10, 2, 10)          # len // n_folds, 5 left out
    r = r_precision_dmgan(txt[:7], txt[:7], None)
    assert (r['n_folds'], r['fold_size'], r['mean']) == (7, 1, 1.0)
    r = r_precision_dmgan(txt[:1], txt[:1], None, pool=txt[1:4])                      # one image, a separate pool
    assert (r['n_folds'], r['fold_size'], r['mean'], r['min_other']) == (1, 1, 1.0, 3)


def test_off_by_one_reproduces_the_official_slices():
    x, sign = torch.eye(12), torch.tensor([1.] * 6 + [-1.] * 6)       # images 0-5 match their captions, 6-11 oppose them
    r0 = r_precision_dmgan(x * sign[:, None], x, None, n_folds=4)
    r1 = r_precision_dmgan(x * sign[:, None], x, None, n_folds=4, off_by_one=True)
    h = (sign > 0).double()[torch.randperm(12, generator=torch.Generator().manual_seed(1))].view(4, 3)
    assert r0['folds'] == h.mean(1).tolist() and r1['folds'] == h[:, :2].mean(1).tolist()
    assert r0['mean'] == 0.5 and r1['off_by_one']


def test_ties_count_as_hits_unlike_ours():
    "Templated captions: another class's caption is often word for word the true one; DM-GAN's argmax counts the tie a hit."
    g = torch.Generator().manual_seed(0)
    texts = torch.randn(5, 64, generator=g)
    said, cls = torch.randint(0, 5, (3000,), generator=g), torch.randint(0, 20, (3000,), generator=g)
    codes = texts[said]
    assert r_precision(codes, codes, cls)[0] < 0.01
    assert r_precision_dmgan(codes, codes, cls)['mean'] > 0.99


def test_the_pool_matters():
    "The evaluated captions are easy negatives; the held-out pool also holds, for each image, a near-twin of another class: ours 1.0, DM-GAN's lower."
    n, g = 50, torch.Generator().manual_seed(0)
    caps, cls = torch.randn(n, 64, generator=g), torch.arange(n)
    img = caps + 0.1 * torch.randn(n, 64, generator=g)                      # close to its caption (cosine ~0.99)
    twins = img + 1e-3 * torch.randn(n, 64, generator=g)                    # closer still, and of another class (n + i)
    pool, pool_cls = torch.cat([caps, twins]), torch.cat([cls, cls + n])
    assert r_precision(img, caps, cls)[0] == r_precision_dmgan(img, caps, cls)['mean'] == 1.0
    # 99 draws from 99 other-class captions: an image misses its twin with probability (98/99)^99 ~ 0.37, and loses when it draws it
    dm = r_precision_dmgan(img, caps, cls, pool=pool, pool_labels=pool_cls)['mean']
    assert 0.15 < dm < 0.6


def test_labels_absent_multi_hot_and_other_image():
    caps = _codes(300)
    multi = torch.zeros(300, 4); multi[torch.arange(300), torch.arange(300) % 4] = 1
    assert r_precision_dmgan(caps, caps, multi)['mean'] == 1.0
    r = r_precision_dmgan(caps, caps, multi, pool=caps, pool_labels=multi)
    assert r['mean'] == 1.0 and r['min_other'] == 225
    assert r_precision_dmgan(caps, caps, None)['min_other'] == 299                  # other image
    assert (other_class_draws(torch.arange(300), torch.arange(300), 99) != torch.arange(300)[:, None]).all()


def test_one_line_errors():
    x = torch.eye(12)
    for call, msg in [(lambda: r_precision_dmgan(x, x, torch.zeros(12)), 'needs captions of another class'),
                      (lambda: r_precision_dmgan(x, x[:5], None), 'must both be [N, D]'),
                      (lambda: r_precision_dmgan(x[:0], x[:0], None), 'at least one image'),
                      (lambda: r_precision_dmgan(x[:3], x[:3], None, off_by_one=True), 'off_by_one drops one image per fold'),
                      (lambda: r_precision_dmgan(x, x, torch.arange(12), pool=x), 'give both labels and pool_labels'),
                      (lambda: r_precision_dmgan(x, x, None, n_candidates=1), 'at least 2'),
                      (lambda: r_precision_dmgan(x, x, torch.zeros(5)), '5 labels for 12 rows')]:
        with pytest.raises(T2IError) as e: call()
        assert msg in str(e.value) and '\n' not in str(e.value)


# ---- evaluate_run on real run folders

TINY_EV = EvaluatorConfig(nf=4, epochs=1, n_extra=0)


@pytest.fixture(scope='module')
def data(tiny_shapes): return tiny_shapes   # (root, encoders): tests/conftest.py


def test_evaluate_run_on_attngan(data, tmp_path):
    from t2i_nb.train import t2i_train
    root, enc = data
    t2i_train(out=str(tmp_path/'r'), root=str(root), steps=2, backbone='attngan', text='damsm', encoders=str(enc),
              bs=4, img_size=128, nf=4, ckpt_every=0, quiet=True)
    res = evaluate_run(tmp_path/'r', n_samples=8, bs=4, device='cpu', evaluator_cfg=TINY_EV, log=None)
    assert (res['backbone'], res['img_size'], res['n_samples']) == ('attngan', 128, 8)
    assert 0 <= res['r_precision']['generated'] <= 1 and res['r_precision']['n_neg'] == 99     # the existing keys stay
    rd = res['r_precision_dmgan']
    assert 0 <= rd['generated'] <= 1 and 0 <= rd['real'] <= 1 and rd['generated_std'] >= 0
    assert (rd['mismatch'], rd['n_candidates'], rd['off_by_one'], rd['fold_size']['generated']) == ('another class', 100, False, 1)
    assert rd['pool_captions'] > res['n_real'] and 'DM-GAN' in rd['protocol'] and rd['encoders'] == str(tmp_path/'r'/'encoders')
    assert json.loads((tmp_path/'r'/'eval.json').read_text())['r_precision_dmgan'] == rd
    md = (tmp_path/'r'/'eval.md').read_text()
    assert '| R-precision |' in md and '| R-precision, DM-GAN protocol |' in md


def test_eval_markdown_of_an_older_result_has_no_dmgan_row():
    res = {'run': 'r', 'step': 1, 'backbone': 'dfgan', 'text': 'damsm', 'scl': 'none', 'img_size': 32, 'dataset': 'shapes',
           'n_samples': 2, 'seed': 0, 'n_real': 2, 'split': 'test',
           'r_precision': {'generated': 0.1, 'generated_std': 0.01, 'real': 0.5, 'real_std': 0.02}}
    md = eval_markdown(res)
    assert '| R-precision |' in md and 'DM-GAN' not in md


def test_evaluate_run_multi_label_set_mismatches_other_images(tmp_path):
    "COCO-style sets (here shapes-multi): DM-GAN's COCO class_id is np.arange, so a mismatched caption is of another image."
    from t2i_nb.shapes import make_shapes_multi
    from t2i_nb.pretrain import pretrain, PretrainConfig
    from t2i_nb.train import t2i_train
    root = make_shapes_multi(tmp_path/'multi', n=40, size=32, seed=0)
    enc = pretrain(PretrainConfig(dataset='shapes-multi', root=str(root), image_size=32, nef=32, bs=8, epochs=1, valid_every=0),
                   out=tmp_path/'enc', progress=False, log=lambda *a: None).out
    t2i_train(out=str(tmp_path/'r'), dataset='shapes-multi', root=str(root), steps=1, backbone='dfgan', text='damsm', scl='none',
              encoders=str(enc), bs=4, img_size=32, nf=4, ckpt_every=0, quiet=True)
    res = evaluate_run(tmp_path/'r', n_samples=6, bs=6, device='cpu', evaluator_cfg=TINY_EV, oracle=False, log=None)
    rd = res['r_precision_dmgan']
    assert rd['mismatch'] == 'another image' and rd['min_other'] >= rd['pool_captions'] - 10 and 0 <= rd['generated'] <= 1
