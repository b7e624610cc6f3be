"""Every loss in `t2i_nb.losses` against a naive reference written here from the formulas.

The references use python loops over anchors / pairs / words / regions and plain python floats (`math`), so
they share no code (and no vectorisation tricks) with the module. Inputs are random but deliberately
tie-rich: duplicate labels, classes with a single member, duplicate feature rows, empty and identical
multi-hot label sets. Gradients are checked with `torch.autograd.gradcheck` on small float64 tensors.
"""
import math
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from t2i_nb.core import T2IError
from t2i_nb.losses import (CONTRASTIVE, LabelHead, ce_label_loss, contrastive_loss, damsm_sent_loss, damsm_word_loss,
                           label_overlap, nt_xent_loss, quadruple_views, same_label, scl_quadruple_loss, sup_con_loss,
                           unicl_loss, word_region_scores)

DT = torch.float64
TOL = dict(rtol=1e-9, atol=1e-9)

# ------------------------------------------------------------------------------------------------------------
# naive references
# ------------------------------------------------------------------------------------------------------------
def dot(a, b): return sum(x * y for x, y in zip(a, b))
def norm(a): return math.sqrt(dot(a, a))
def cosine(a, b, eps=1e-8): return dot(a, b) / max(norm(a) * norm(b), eps)
def unit(a): n = norm(a); return [x / n for x in a]
def rows(x): return [[float(v) for v in r] for r in torch.as_tensor(x).detach()]

def label_sets(labels):
    "One python set per sample: {class} for class indices, the set of active columns for multi-hot rows."
    labels = torch.as_tensor(labels)
    if labels.ndim == 1: return [{int(v)} for v in labels]
    return [{c for c, v in enumerate(r) if v != 0} for r in labels.tolist()]

def jaccard(a, b): return len(a & b) / len(a | b) if a | b else 0.

def same(sets, i, j): return i == j or (sets[i] == sets[j] and len(sets[i]) > 0)

def ce_from(logits, allowed, target):
    "-log softmax(logits)[target] over the allowed entries only."
    xs = [logits[k] for k in allowed]
    m = max(xs)
    return -(logits[target] - (m + math.log(sum(math.exp(x - m) for x in xs))))

def naive_word_scores(img, words, cap_lens, g1=4., g2=5., eps=1e-8):
    "R[j][i] for image j, caption i, and the attention of each caption over its own image, by the formulas."
    B, D, H, W = img.shape
    regions = [[[float(img[j, d, r // W, r % W]) for d in range(D)] for r in range(H * W)] for j in range(B)]
    caps = [[[float(words[i, d, t]) for d in range(D)] for t in range(int(cap_lens[i]))] for i in range(B)]
    R = [[0.] * B for _ in range(B)]
    attn = {}
    for i in range(B):
        for j in range(B):
            e, v = caps[i], regions[j]
            s = [[dot(e[t], v[r]) for r in range(len(v))] for t in range(len(e))]
            sbar = [[math.exp(s[t][r]) / sum(math.exp(s[k][r]) for k in range(len(e))) for r in range(len(v))]
                    for t in range(len(e))]
            total = 0.
            for t in range(len(e)):
                ex = [math.exp(g1 * sbar[t][r]) for r in range(len(v))]
                a = [x / sum(ex) for x in ex]
                c = [sum(a[r] * v[r][d] for r in range(len(v))) for d in range(D)]
                total += math.exp(g2 * cosine(c, e[t], eps))
                if i == j: attn[i, t] = a
            R[j][i] = math.log(total)
    return R, attn

def naive_bidir(S, labels):
    "S[j][i]: image j, caption i. Mean CE image->text (over i) and text->image (over j), same-label pairs masked."
    B = len(S)
    sets = label_sets(labels) if labels is not None else None
    def ok(a, b): return sets is None or not (a != b and same(sets, a, b))
    l0 = sum(ce_from(S[j], [i for i in range(B) if ok(j, i)], j) for j in range(B)) / B
    cols = [[S[j][i] for j in range(B)] for i in range(B)]
    l1 = sum(ce_from(cols[i], [j for j in range(B) if ok(i, j)], i) for i in range(B)) / B
    return l0, l1

def naive_damsm_word(img, words, cap_lens, labels=None, g1=4., g2=5., g3=10.):
    R, attn = naive_word_scores(img, words, cap_lens, g1, g2)
    return (*naive_bidir([[g3 * x for x in r] for r in R], labels), attn)

def naive_damsm_sent(v, e, labels=None, g3=10., eps=1e-8):
    v, e = rows(v), rows(e)
    return naive_bidir([[g3 * cosine(v[j], e[i], eps) for i in range(len(e))] for j in range(len(v))], labels)

def naive_sup_con_items(items, t=0.07, tb=0.07):
    "items: list of (vector, owner, label set). Positives: same owner (weight 1) or Jaccard of the label sets."
    z = [(unit(vec), owner, ls) for vec, owner, ls in items]
    losses = []
    for i, (zi, oi, li) in enumerate(z):
        logits = {a: dot(zi, za) / t for a, (za, _, _) in enumerate(z) if a != i}
        if not logits: continue                            # a lone view: no candidates at all
        m = max(logits.values())
        lse = m + math.log(sum(math.exp(x - m) for x in logits.values()))
        num = wsum = 0.
        for p, (zp, op, lp) in enumerate(z):
            if p == i: continue
            w = 1. if op == oi else jaccard(li, lp)
            if w > 0: num += w * (logits[p] - lse); wsum += w
        if wsum > 0: losses.append(-(t / tb) * num / wsum)
    return sum(losses) / len(losses) if losses else 0.

def naive_sup_con(features, labels, t=0.07, tb=0.07):
    sets = label_sets(labels)
    N, V, _ = features.shape
    return naive_sup_con_items([(rows(features[n])[k], n, sets[n]) for n in range(N) for k in range(V)], t, tb)

def naive_quadruple(ta, ia, tb_, ib, labels, t=0.07, tb=0.07):
    N, sets = len(ta), label_sets(labels)
    if len(sets) == N:  # per pair: four views of pair n
        items = [(rows(x)[n], n, sets[n]) for n in range(N) for x in (ta, ia, tb_, ib)]
    else:               # per item: A_n is sample n, B_n is sample N + n
        items = ([(rows(x)[n], n, sets[n]) for n in range(N) for x in (ta, ia)] +
                 [(rows(x)[n], N + n, sets[N + n]) for n in range(N) for x in (tb_, ib)])
    return naive_sup_con_items(items, t, tb)

def naive_nt_xent(z1, z2, t=0.5):
    z = [unit(r) for r in rows(z1) + rows(z2)]
    B, total = len(z1), 0.
    for k in range(2 * B):
        twin = (k + B) % (2 * B)
        logits = [dot(z[k], z[a]) / t for a in range(2 * B)]
        total += ce_from(logits, [a for a in range(2 * B) if a != k], twin)
    return total / (2 * B)

def naive_unicl(img, txt, labels, t=0.07):
    v, e, sets = [unit(r) for r in rows(img)], [unit(r) for r in rows(txt)], label_sets(labels)
    B = len(v)
    S = [[dot(v[i], e[j]) / t for j in range(B)] for i in range(B)]
    def soft_ce(row, k):
        pos = [j for j in range(B) if same(sets, k, j)]
        return sum(ce_from(row, range(B), j) for j in pos) / len(pos)
    i2t = sum(soft_ce(S[i], i) for i in range(B)) / B
    t2i = sum(soft_ce([S[j][i] for j in range(B)], i) for i in range(B)) / B
    return (i2t + t2i) / 2

def naive_ce_label(logits, labels):
    x, labels = rows(logits), torch.as_tensor(labels)
    if labels.ndim == 1: return sum(ce_from(r, range(len(r)), int(y)) for r, y in zip(x, labels)) / len(x)
    def sig(a): return 1 / (1 + math.exp(-a))
    y = rows(labels)
    terms = [-(y[b][c] * math.log(sig(x[b][c])) + (1 - y[b][c]) * math.log(1 - sig(x[b][c])))
             for b in range(len(x)) for c in range(len(x[0]))]
    return sum(terms) / len(terms)

# ------------------------------------------------------------------------------------------------------------
# tie-rich inputs
# ------------------------------------------------------------------------------------------------------------
def tie_labels(n, g, multi=False):
    "Duplicate labels, at least one singleton class; multi-hot: include an empty row and two identical rows."
    if not multi:
        y = torch.randint(0, max(1, n // 2), (n,), generator=g)
        y[-1] = 100                                   # a class with one member
        return y
    y = (torch.rand(n, 4, generator=g) < 0.4).long()
    y[0] = 0                                          # empty label set
    if n > 2: y[2] = y[1]                             # identical label sets
    return y

def tie_feats(shape, g):
    x = torch.randn(*shape, generator=g, dtype=DT)
    if shape[0] > 1: x[1] = x[0]                      # duplicate features
    return x

CASES = [(seed, multi) for seed in range(4) for multi in (False, True)]

# ------------------------------------------------------------------------------------------------------------
# labels
# ------------------------------------------------------------------------------------------------------------
def test_label_overlap_and_same_label():
    g = torch.Generator().manual_seed(0)
    for multi in (False, True):
        y = tie_labels(7, g, multi)
        sets = label_sets(y)
        want = [[1. if i == j else jaccard(sets[i], sets[j]) for j in range(7)] for i in range(7)]
        torch.testing.assert_close(label_overlap(y).double(), torch.tensor(want, dtype=DT))
        assert same_label(y).tolist() == [[same(sets, i, j) for j in range(7)] for i in range(7)]

# ------------------------------------------------------------------------------------------------------------
# DAMSM
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('seed,multi', CASES)
def test_damsm_word_matches_naive(seed, multi):
    g = torch.Generator().manual_seed(seed)
    B, D, H, W, T = 5, 4, 2, 3, 6
    img, words = 0.7 * tie_feats((B, D, H, W), g), 0.7 * tie_feats((B, D, T), g)
    lens = torch.randint(1, T + 1, (B,), generator=g); lens[0] = T; lens[1] = 1
    y = tie_labels(B, g, multi)
    for labels in (None, y):
        l0, l1, attn = damsm_word_loss(img, words, lens, labels)
        n0, n1, nattn = naive_damsm_word(img, words, lens, labels)
        assert math.isclose(l0.item(), n0, rel_tol=1e-9) and math.isclose(l1.item(), n1, rel_tol=1e-9)
        for (i, t), a in nattn.items():
            torch.testing.assert_close(attn[i, t].flatten(), torch.tensor(a, dtype=DT), **TOL)
        assert attn[1, 1:].abs().sum() == 0               # padding words have no attention map

def test_damsm_word_custom_gammas_and_chunks():
    g = torch.Generator().manual_seed(7)
    img, words, lens = tie_feats((4, 3, 2, 2), g), tie_feats((4, 3, 4), g), torch.tensor([4, 2, 3, 1])
    l0, l1, _ = damsm_word_loss(img, words, lens, gamma1=2., gamma2=3., gamma3=7.)
    n0, n1, _ = naive_damsm_word(img, words, lens, g1=2., g2=3., g3=7.)
    assert math.isclose(l0.item(), n0, rel_tol=1e-9) and math.isclose(l1.item(), n1, rel_tol=1e-9)
    full, a_full = word_region_scores(img, words, lens)
    one, a_one = word_region_scores(img, words, lens, chunk=1)
    torch.testing.assert_close(full, one, **TOL); torch.testing.assert_close(a_full, a_one, **TOL)

def test_damsm_masking_changes_loss_as_naive_says():
    g = torch.Generator().manual_seed(3)
    B = 6
    img, words, lens = tie_feats((B, 4, 2, 2), g), tie_feats((B, 4, 5), g), torch.tensor([5, 3, 4, 1, 2, 5])
    y = torch.tensor([0, 1, 0, 2, 1, 3])
    p0, p1, _ = damsm_word_loss(img, words, lens)
    m0, m1, _ = damsm_word_loss(img, words, lens, labels=y)
    q0, q1, _ = naive_damsm_word(img, words, lens)
    r0, r1, _ = naive_damsm_word(img, words, lens, y)
    assert math.isclose((m0 - p0).item(), r0 - q0, rel_tol=1e-7, abs_tol=1e-12)
    assert math.isclose((m1 - p1).item(), r1 - q1, rel_tol=1e-7, abs_tol=1e-12)
    assert m0 < p0 and m1 < p1                             # removing negatives can only lower the loss
    # all-unique labels mask nothing
    u0, u1, _ = damsm_word_loss(img, words, lens, labels=torch.arange(B))
    assert u0.item() == p0.item() and u1.item() == p1.item()
    # multi-hot: only identical non-empty sets are masked
    yh = torch.tensor([[1, 0], [1, 1], [1, 0], [0, 0], [1, 1], [0, 0]])
    h0, h1, _ = damsm_word_loss(img, words, lens, labels=yh)
    k0, k1, _ = naive_damsm_word(img, words, lens, yh)
    assert math.isclose(h0.item(), k0, rel_tol=1e-9) and math.isclose(h1.item(), k1, rel_tol=1e-9)

@pytest.mark.parametrize('seed,multi', CASES)
def test_damsm_sent_matches_naive(seed, multi):
    g = torch.Generator().manual_seed(seed)
    v, e, y = tie_feats((6, 5), g), tie_feats((6, 5), g), tie_labels(6, g, multi)
    for labels in (None, y):
        l0, l1 = damsm_sent_loss(v, e, labels)
        n0, n1 = naive_damsm_sent(v, e, labels)
        assert math.isclose(l0.item(), n0, rel_tol=1e-9) and math.isclose(l1.item(), n1, rel_tol=1e-9)
    l0, _ = damsm_sent_loss(v, e, y, gamma3=3.)
    assert math.isclose(l0.item(), naive_damsm_sent(v, e, y, g3=3.)[0], rel_tol=1e-9)

# ------------------------------------------------------------------------------------------------------------
# SupCon and the quadruple
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('seed,multi', CASES)
@pytest.mark.parametrize('V', [1, 2, 3])
def test_sup_con_matches_naive(seed, multi, V):
    g = torch.Generator().manual_seed(seed)
    f, y = tie_feats((6, V, 4), g), tie_labels(6, g, multi)
    assert math.isclose(sup_con_loss(f, y).item(), naive_sup_con(f, y), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(sup_con_loss(f, y, 0.3, 0.1).item(), naive_sup_con(f, y, 0.3, 0.1), rel_tol=1e-9, abs_tol=1e-12)

@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 7), V=st.integers(1, 3), n_cls=st.integers(1, 5), seed=st.integers(0, 2**31 - 1),
       multi=st.booleans())
def test_sup_con_matches_naive_property(N, V, n_cls, seed, multi):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(N, V, 3, generator=g, dtype=DT)
    y = (torch.rand(N, n_cls, generator=g) < 0.5).long() if multi else torch.randint(0, n_cls, (N,), generator=g)
    got = sup_con_loss(f, y)
    assert torch.isfinite(got)
    assert math.isclose(got.item(), naive_sup_con(f, y), rel_tol=1e-9, abs_tol=1e-12)

def test_sup_con_no_positives_is_zero_not_nan():
    for f, y in [(torch.randn(5, 1, 8, requires_grad=True), torch.arange(5)),             # all unique, V=1
                 (torch.randn(3, 1, 8, requires_grad=True), torch.zeros(3, 4, dtype=torch.long)),  # empty label sets
                 (torch.randn(1, 1, 8, requires_grad=True), torch.tensor([0]))]:           # a single view
        loss = sup_con_loss(f, y)
        assert loss.item() == 0. and not torch.isnan(loss)
        loss.backward()
        assert f.grad is not None and torch.all(f.grad == 0)

def test_sup_con_anchors_without_positive_are_left_out():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(4, 1, 5, generator=g, dtype=DT)
    # samples 2 and 3 are singletons with V=1: the loss is the mean over anchors 0 and 1 only
    assert math.isclose(sup_con_loss(f, torch.tensor([0, 0, 1, 2])).item(),
                        naive_sup_con(f, torch.tensor([0, 0, 1, 2])), rel_tol=1e-9)
    loss = sup_con_loss(f.requires_grad_(), torch.tensor([0, 0, 1, 2]))
    loss.backward()
    assert torch.isfinite(f.grad).all()

@pytest.mark.parametrize('seed,multi', CASES)
def test_quadruple_matches_naive(seed, multi):
    g = torch.Generator().manual_seed(seed)
    N = 4
    ta, ia, tb, ib = (tie_feats((N, 5), g) for _ in range(4))
    y = tie_labels(N, g, multi)
    assert math.isclose(scl_quadruple_loss(ta, ia, tb, ib, y).item(), naive_quadruple(ta, ia, tb, ib, y), rel_tol=1e-9)
    # per-item labels (A then B): the [2N, 2, D] layout
    y2 = torch.cat([y, tie_labels(N, g, multi)])
    assert math.isclose(scl_quadruple_loss(ta, ia, tb, ib, y2, 0.2).item(),
                        naive_quadruple(ta, ia, tb, ib, y2, 0.2), rel_tol=1e-9)

def test_quadruple_layouts_agree_when_pairs_share_the_label():
    g = torch.Generator().manual_seed(5)
    ta, ia, tb, ib = (torch.randn(5, 6, generator=g, dtype=DT) for _ in range(4))
    y = torch.tensor([3, 1, 3, 0, 2])
    a = scl_quadruple_loss(ta, ia, tb, ib, y)
    b = scl_quadruple_loss(ta, ia, tb, ib, torch.cat([y, y]))
    torch.testing.assert_close(a, b, **TOL)
    feats, lab = quadruple_views(ta, ia, tb, ib, y)
    assert feats.shape == (5, 4, 6) and torch.equal(feats[2], torch.stack([ta[2], ia[2], tb[2], ib[2]]))
    feats, lab = quadruple_views(ta, ia, tb, ib, torch.cat([y, y]))
    assert feats.shape == (10, 2, 6) and torch.equal(feats[7], torch.stack([tb[2], ib[2]]))

# ------------------------------------------------------------------------------------------------------------
# NT-Xent, UniCL, label head
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('seed', range(4))
def test_nt_xent_matches_naive(seed):
    g = torch.Generator().manual_seed(seed)
    z1, z2 = tie_feats((5, 4), g), tie_feats((5, 4), g)
    z2[3] = z1[3]                                          # a view identical to its twin
    assert math.isclose(nt_xent_loss(z1, z2).item(), naive_nt_xent(z1, z2), rel_tol=1e-9)
    assert math.isclose(nt_xent_loss(z1, z2, 0.1).item(), naive_nt_xent(z1, z2, 0.1), rel_tol=1e-9)
    # SimCLR is SupCon with one class per sample, V = 2 and base_temperature = temperature
    torch.testing.assert_close(nt_xent_loss(z1, z2, 0.5), sup_con_loss(torch.stack([z1, z2], 1), torch.arange(5), 0.5, 0.5))

@pytest.mark.parametrize('seed,multi', CASES)
def test_unicl_matches_naive(seed, multi):
    g = torch.Generator().manual_seed(seed)
    v, e, y = tie_feats((6, 4), g), tie_feats((6, 4), g), tie_labels(6, g, multi)
    assert math.isclose(unicl_loss(v, e, y).item(), naive_unicl(v, e, y), rel_tol=1e-9)
    assert math.isclose(unicl_loss(v, e, y, 0.5).item(), naive_unicl(v, e, y, 0.5), rel_tol=1e-9)

@pytest.mark.parametrize('seed,multi', CASES)
def test_ce_label_matches_naive(seed, multi):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    y = tie_labels(6, g, multi)
    if not multi: y = y.clamp_max(4)
    head = LabelHead(4, 4 if multi else 5).double()
    x = tie_feats((6, 4), g)
    assert math.isclose(ce_label_loss(head, x, y).item(), naive_ce_label(head(x), y), rel_tol=1e-9)

# ------------------------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------------------------
def _req(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=DT).requires_grad_() for s in shapes]

def test_gradcheck_damsm_word():
    img, words = _req((3, 3, 2, 2), (3, 3, 4))
    lens, y = torch.tensor([4, 2, 3]), torch.tensor([0, 1, 0])
    assert torch.autograd.gradcheck(lambda a, b: damsm_word_loss(a, b, lens, y), (img, words))
    assert torch.autograd.gradcheck(lambda a, b: damsm_word_loss(a, b, lens)[:2], (img, words))

def test_gradcheck_damsm_sent():
    v, e = _req((4, 3), (4, 3))
    assert torch.autograd.gradcheck(lambda a, b: damsm_sent_loss(a, b, torch.tensor([0, 1, 0, 2])), (v, e))

def test_gradcheck_sup_con_and_quadruple():
    (f,) = _req((4, 2, 3))
    assert torch.autograd.gradcheck(lambda x: sup_con_loss(x, torch.tensor([0, 1, 0, 2]), 0.5), (f,))
    yh = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 1]])
    assert torch.autograd.gradcheck(lambda x: sup_con_loss(x, yh, 0.5), (f,))
    (g1,) = _req((4, 1, 3), seed=1)                        # V=1 with singletons: some anchors left out
    assert torch.autograd.gradcheck(lambda x: sup_con_loss(x, torch.tensor([0, 0, 1, 2]), 0.5), (g1,))
    q = _req((3, 3), (3, 3), (3, 3), (3, 3), seed=2)
    assert torch.autograd.gradcheck(lambda *a: scl_quadruple_loss(*a, torch.tensor([0, 1, 0]), 0.5), q)

def test_gradcheck_nt_xent_unicl_ce():
    z1, z2 = _req((4, 3), (4, 3))
    assert torch.autograd.gradcheck(lambda a, b: nt_xent_loss(a, b), (z1, z2))
    assert torch.autograd.gradcheck(lambda a, b: unicl_loss(a, b, torch.tensor([0, 1, 0, 0]), 0.5), (z1, z2))
    head = LabelHead(3, 3).double()
    assert torch.autograd.gradcheck(lambda a: ce_label_loss(head, a, torch.tensor([0, 2, 2, 1])), (z1,))
    assert torch.autograd.gradcheck(lambda a: ce_label_loss(head, a, torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])), (z1,))

# ------------------------------------------------------------------------------------------------------------
# dispatcher, precision, errors
# ------------------------------------------------------------------------------------------------------------
def test_dispatcher_routes_to_the_losses():
    g = torch.Generator().manual_seed(0)
    ta, ia, tb, ib = (torch.randn(4, 6, generator=g) for _ in range(4))
    y = torch.tensor([0, 1, 0, 2])
    head = LabelHead(6, 3)
    assert set(CONTRASTIVE) == {'supcon', 'unicl', 'ce', 'none'}
    torch.testing.assert_close(contrastive_loss('supcon', ta, ia, tb, ib, y, temperature=0.2),
                               scl_quadruple_loss(ta, ia, tb, ib, y, 0.2))
    torch.testing.assert_close(contrastive_loss('unicl', ta, ia, tb, ib, y),
                               unicl_loss(torch.cat([ia, ib]), torch.cat([ta, tb]), torch.cat([y, y])))
    torch.testing.assert_close(contrastive_loss('ce', ta, ia, tb, ib, y, head=head, temperature=0.2),
                               ce_label_loss(head, torch.cat([ta, ia, tb, ib]), y.repeat(4)))
    assert contrastive_loss('none', ta, ia, tb, ib, y).item() == 0.
    with pytest.raises(T2IError, match='unknown contrastive loss'): contrastive_loss('clip', ta, ia, tb, ib, y)
    with pytest.raises(T2IError, match='needs a classifier'): contrastive_loss('ce', ta, ia, tb, ib, y)

def test_losses_run_in_float32_under_autocast():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 2, 8, generator=g).bfloat16()
    y = torch.tensor([0, 1, 0, 1, 2, 2])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        a = sup_con_loss(f, y)
        l0, l1 = damsm_sent_loss(f[:, 0], f[:, 1], y)
    assert a.dtype == l0.dtype == torch.float32
    torch.testing.assert_close(a, sup_con_loss(f.float(), y))
    torch.testing.assert_close(l0, damsm_sent_loss(f[:, 0].float(), f[:, 1].float(), y)[0])

@pytest.mark.parametrize('call,msg', [
    (lambda: sup_con_loss(torch.randn(4, 8), torch.arange(4)), r'features must be a float tensor \[N, V, D\]'),
    (lambda: sup_con_loss(torch.randn(4, 2, 8), torch.arange(3)), r'labels must be \[4\] class indices'),
    (lambda: damsm_word_loss(torch.randn(2, 4, 2, 2), torch.randn(2, 5, 3), torch.tensor([3, 3])), 'must share batch and feature dims'),
    (lambda: damsm_word_loss(torch.randn(2, 4, 2, 2), torch.randn(2, 4, 3), torch.tensor([4, 3])), 'cap_lens must be'),
    (lambda: damsm_sent_loss(torch.randn(3, 4), torch.randn(3, 5)), 'must have the same shape'),
    (lambda: scl_quadruple_loss(*torch.randn(4, 3, 5), torch.arange(5)), r'labels must be per pair \(\[3\]'),
    (lambda: ce_label_loss(LabelHead(5, 3), torch.randn(2, 5), torch.ones(2, 4)), 'multi-hot labels have 4 classes'),
])
def test_bad_input_is_one_line_t2ierror(call, msg):
    with pytest.raises(T2IError, match=msg) as e: call()
    assert '\n' not in str(e.value)

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_losses_on_cuda_match_cpu():
    g = torch.Generator().manual_seed(0)
    img, words, lens = torch.randn(4, 8, 3, 3, generator=g), torch.randn(4, 8, 5, generator=g), torch.tensor([5, 2, 3, 1])
    y, yh = torch.tensor([0, 1, 0, 2]), torch.tensor([[1, 0], [1, 1], [1, 0], [0, 0]])
    ta, ia, tb, ib = torch.randn(4, 4, 8, generator=g).unbind(0)
    head = LabelHead(8, 3)
    calls = [lambda d: damsm_word_loss(img.to(d), words.to(d), lens.to(d), y)[:2],
             lambda d: damsm_sent_loss(ta.to(d), ia.to(d), yh),
             lambda d: sup_con_loss(torch.stack([ta, ia], 1).to(d), yh),
             lambda d: nt_xent_loss(ta.to(d), tb.to(d)),
             lambda d: unicl_loss(ia.to(d), ta.to(d), y),
             lambda d: ce_label_loss(head.to(d), ta.to(d), y)] + \
            [lambda d, k=k: contrastive_loss(k, ta.to(d), ia.to(d), tb.to(d), ib.to(d), y, head=head.to(d)) for k in CONTRASTIVE]
    for c in calls:
        cpu, gpu = c('cpu'), c('cuda')
        torch.testing.assert_close(torch.stack(list(gpu) if isinstance(gpu, tuple) else [gpu]).cpu(),
                                   torch.stack(list(cpu) if isinstance(cpu, tuple) else [cpu]), rtol=1e-4, atol=1e-5)
