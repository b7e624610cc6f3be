"Tests of `t2i_nb.pretrain`: R-precision and retrieval recall against naive loops, the run folder, every label-guided loss."
import json, math
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from t2i_nb.core import T2IError
from t2i_nb.data import load_dataset
from t2i_nb.shapes import make_shapes, make_shapes_multi
from t2i_nb.pretrain import (PretrainConfig, DAMSMLoss, RUN_FILES, bench_pretrain, build_damsm, encode_dataset,
                             label_keys, load_pretrained, mismatched_indices, pretrain, r_precision, retrieval_recall)


# ---------------------------------------------------------------- R-precision

def naive_r_precision(img, txt, labels, n_neg=99, n_folds=10, seed=0):
    "The protocol one image at a time: own caption vs `n_neg` mismatched ones, ties are misses, folds of shuffled outcomes."
    neg = mismatched_indices(labels, n_neg, seed)
    hits = []
    for i in range(len(img)):
        sims = [F.cosine_similarity(img[i].double(), txt[j].double(), dim=0).item() for j in [i] + neg[i].tolist()]
        hits.append(float(sims[0] > max(sims[1:])))
    hits = np.array(hits)[np.random.default_rng(seed).permutation(len(hits))]
    folds = [f.mean() for f in np.array_split(hits, n_folds)]
    return float(np.mean(folds)), float(np.std(folds))

def _multi_hot(n, c, g):
    y = (torch.rand(n, c, generator=g) < 0.3).float()
    y[:3] = 0                                   # a few images without any label
    return y

@pytest.mark.parametrize('kind, n_neg, n_folds, seed', [('single', 99, 10, 0), ('single', 10, 3, 5), ('multi', 30, 10, 1)])
def test_r_precision_matches_naive_loop(kind, n_neg, n_folds, seed):
    g = torch.Generator().manual_seed(seed)
    n = 230
    labels = torch.randint(0, 12, (n,), generator=g) if kind == 'single' else _multi_hot(n, 5, g)
    img = torch.randn(n, 16, generator=g)
    txt = img + 1.5 * torch.randn(n, 16, generator=g)   # noisy: some hits, some misses
    got = r_precision(img, txt, labels, n_neg, n_folds, seed)
    want = naive_r_precision(img, txt, labels, n_neg, n_folds, seed)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0.05 < got[0] < 0.95

def test_r_precision_constructed_cases():
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(5000, 32, generator=g), torch.randint(0, 200, (5000,), generator=g)
    assert r_precision(feats, feats, labels) == (1.0, 0.0)                   # each image equals its caption
    assert r_precision(feats, 3 * feats + 0.01 * torch.randn(5000, 32, generator=g), labels)[0] == 1.0  # scale-free
    mean, std = r_precision(feats, torch.randn(5000, 32, generator=g), labels)
    assert abs(mean - 0.01) < 0.005 and std < 0.01                          # chance is 1 / (1 + 99)
    assert r_precision(torch.ones(40, 4), torch.ones(40, 4), torch.arange(40) % 4)[0] == 0.0  # ties are misses

def test_r_precision_is_deterministic_and_seeded():
    g = torch.Generator().manual_seed(1)
    img, txt, y = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g), torch.randint(0, 9, (300,), generator=g)
    assert r_precision(img, txt, y, seed=3) == r_precision(img, txt, y, seed=3)
    assert not torch.equal(mismatched_indices(y, seed=0), mismatched_indices(y, seed=1))

def test_mismatched_indices_never_share_a_label():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (500,), generator=g)
    neg = mismatched_indices(y, 99)
    assert neg.shape == (500, 99) and bool((y[neg] != y[:, None]).all())
    ym = _multi_hot(200, 3, g)
    neg = mismatched_indices(ym, 50)
    keys = label_keys(ym)
    assert bool((keys[neg] != keys[:, None]).all())
    for i in range(3):                                       # empty label sets are "the same" as nothing
        assert set(neg[i].tolist()) - {i} == set(neg[i].tolist())
    with pytest.raises(T2IError, match='at least two different labels'): mismatched_indices(torch.zeros(10).long())

def test_r_precision_bad_shapes():
    with pytest.raises(T2IError, match='must both be'): r_precision(torch.randn(5, 4), torch.randn(5, 3), torch.arange(5))


# ---------------------------------------------------------------- retrieval recall

def naive_recall(img, txt, ks, labels=None):
    img, txt = F.normalize(img.double(), dim=1), F.normalize(txt.double(), dim=1)
    keys = label_keys(labels) if labels is not None else torch.arange(len(img))
    out = {}
    for name, q, gal in (('i2t', img, txt), ('t2i', txt, img)):
        hits = {k: 0 for k in ks}
        for i in range(len(q)):
            s = (gal @ q[i]).tolist()
            ok = [j for j in range(len(s)) if keys[j] == keys[i]]
            best = max(s[j] for j in ok)
            rank = sum(1 for j in range(len(s)) if s[j] >= best and keys[j] != keys[i]) if labels is not None \
                else sum(1 for j in range(len(s)) if s[j] >= s[i] and j != i)
            for k in ks: hits[k] += rank < k
        out |= {f'{name}_r{k}': hits[k] / len(q) for k in ks}
    return out

@pytest.mark.parametrize('use_labels', [False, True])
def test_retrieval_recall_matches_naive_loop(use_labels):
    g = torch.Generator().manual_seed(2)
    img = torch.randn(150, 12, generator=g); txt = img + torch.randn(150, 12, generator=g)
    y = torch.randint(0, 20, (150,), generator=g) if use_labels else None
    got = retrieval_recall(img, txt, (1, 5, 10), labels=y, chunk=64)     # several chunks
    want = naive_recall(img, txt, (1, 5, 10), y)
    assert got == pytest.approx(want, abs=1e-6)
    assert 0 < got['i2t_r1'] < got['i2t_r5'] <= got['i2t_r10'] < 1


# ---------------------------------------------------------------- losses and the model

@pytest.mark.parametrize('scl', ['none', 'supcon', 'unicl', 'ce'])
def test_damsm_loss_all_label_losses_train(scl):
    torch.manual_seed(0)
    m = build_damsm(PretrainConfig(image_size=32, nef=32, scl=scl), ntoken=20, n_classes=4)
    loss_fn = DAMSMLoss(scl=scl, head=m.head)
    x, tok = torch.rand(8, 3, 32, 32) * 2 - 1, torch.randint(2, 20, (8, 18))
    lens, y = torch.randint(1, 19, (8,)), torch.tensor([0, 1, 2, 3] * 2)
    loss = loss_fn(m(x, tok, lens), lens, y)
    assert torch.isfinite(loss) and set(loss_fn.parts) == {'word', 'sent', 'scl'}
    loss.backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)

def test_supcon_term_is_the_quadruple_loss():
    "Per-item labels (what DAMSMLoss passes) give exactly the SCL quadruple loss on a label-paired batch."
    from t2i_nb.losses import scl_quadruple_loss
    g = torch.Generator().manual_seed(0)
    sent, glob = torch.randn(10, 16, generator=g), torch.randn(10, 16, generator=g)
    y = torch.tensor([3, 1, 4, 1, 5] * 2)
    got = DAMSMLoss(scl='supcon').label_loss(sent, glob, y)
    assert got.item() == pytest.approx(scl_quadruple_loss(sent[:5], glob[:5], sent[5:], glob[5:], y[:5]).item(), rel=1e-5)

def test_bench_pretrain():
    r = bench_pretrain(bs=4, size=16, steps=1, warmup=0, scl='supcon')
    assert r['samples_per_s'] > 0 and r['bs'] == 4 and r['device'] == 'cpu'


# ---------------------------------------------------------------- the whole phase (python API)

def test_pretrain_run_folder_roundtrip(tmp_path):
    root = make_shapes(tmp_path/'shapes', n=60, size=32, seed=0)
    res = pretrain(PretrainConfig(root=str(root), image_size=32, nef=32, bs=8, epochs=1, scl='ce', lr=1e-3),
                   out=tmp_path/'run', progress=False, log=lambda *a: None)
    assert set(RUN_FILES) | {'label_head.pth'} == {p.name for p in (tmp_path/'run').iterdir()}
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert 0 <= m['r_precision'] <= 1 and m['split'] == 'test' and len(m['history']) == 1
    assert {'train_word', 'train_sent', 'train_scl', 'valid_word', 'valid_sent', 'valid_scl', 'valid_rprec'} <= set(m['history'][0])
    for f in ('text_encoder.pth', 'image_encoder.pth'):                      # plain state dicts
        sd = torch.load(tmp_path/'run'/f, weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in sd.values())
    enc = load_pretrained(tmp_path/'run')
    assert enc._fields == ('text_encoder', 'image_encoder', 'vocab', 'cfg')   # a NamedTuple: unpacks as before
    text, img, vocab, cfg = enc
    assert cfg is enc.cfg and text is enc.text_encoder
    assert cfg.scl == 'ce' and not text.training
    te = load_dataset('shapes', root, 'test')
    a = encode_dataset(text, img, te, vocab, size=32)
    b = encode_dataset(res.learn.model.text_encoder, res.learn.model.image_encoder, te, res.vocab, size=32)
    torch.testing.assert_close(a.img, b.img); torch.testing.assert_close(a.txt, b.txt)

def test_pretrain_multi_label(tmp_path):
    root = make_shapes_multi(tmp_path/'multi', n=40, size=32, seed=0)
    res = pretrain(PretrainConfig(dataset='shapes-multi', root=str(root), image_size=32, nef=32, bs=8, epochs=1, scl='supcon'),
                   progress=False, log=lambda *a: None)
    assert res.metrics['split'] == 'val' and math.isfinite(res.metrics['r_precision'])

def test_load_pretrained_errors(tmp_path):
    with pytest.raises(T2IError, match='run t2i_pretrain'): load_pretrained(tmp_path/'missing')
