"T2IGAN (t2i_nb.gan): every model/SCL combination trains on a fixed tiny batch, and frozen encoders stay frozen."
import pytest, torch
from t2i_nb.core import set_seed
from t2i_nb.encoders import RNNEncoder, CNNEncoder, TextEmbedConfig
from t2i_nb.models import GANConfig
from t2i_nb.gan import T2IGAN, T2IConfig

B, V, S = 8, 40, 32

def make_batch():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    return (torch.rand(B, 3, S, S, generator=g) * 2 - 1, torch.randint(2, V, (B, 18), generator=g),
            torch.randint(3, 18, (B,), generator=g), labels, torch.arange(B))

def make_gan(text, scl='none', backbone='dfgan'):
    set_seed(0)
    cfg = T2IConfig(backbone=backbone, text=text, scl=scl, gan=GANConfig(img_size=S, nf=8),
                    dte=TextEmbedConfig(ntoken=V, ninput=32, nhidden=32, drop_prob=0.))
    return T2IGAN(cfg, RNNEncoder(V, ninput=32, nhidden=256, drop_prob=0.), CNNEncoder(nef=256, img_size=S, nf=8), n_classes=4)

def frozen_state(m): return {k: v.clone() for k, v in [*m.damsm_text.state_dict().items(), *m.damsm_image.state_dict().items()]}

@pytest.mark.parametrize('backbone, model', [('dfgan', 'damsm'), ('dfgan', 'dte'), ('dfgan', 'dte-shared'), ('dfgan-mask', 'damsm'),
                                             ('ssa', 'damsm'), ('ssa', 'dte')])
def test_overfit_tiny_batch(backbone, model):
    "A few D steps lower D's loss; then a few G steps (D fixed) lower G's loss."
    m, batch = make_gan(model, 'supcon', backbone), make_batch()
    before = frozen_state(m)
    opt_d = torch.optim.Adam(m.d_parameters(), lr=4e-4, betas=(0., .9))
    opt_g = torch.optim.Adam(m.g_parameters(), lr=1e-4, betas=(0., .9))
    def d_eval():
        torch.manual_seed(1); return m.d_loss(batch)[0].item()
    def g_eval():
        torch.manual_seed(1); return m.g_loss(batch)[0].item()
    d0 = d_eval()
    for i in range(15):
        torch.manual_seed(1); opt_d.zero_grad(set_to_none=True); m.d_loss(batch)[0].backward(); opt_d.step()
    d1 = d_eval()
    assert d1 < d0 - 1e-3, (model, d0, d1)
    g0 = g_eval()
    for i in range(15):
        torch.manual_seed(1); opt_g.zero_grad(set_to_none=True); m.g_loss(batch)[0].backward(); opt_g.step()
    g1 = g_eval()
    assert g1 < g0 - 1e-3, (model, g0, g1)
    after = frozen_state(m)
    assert all(torch.equal(before[k], after[k]) for k in before), 'frozen encoders changed'

def test_frozen_encoders_get_no_grad():
    m, batch = make_gan('dte', 'supcon'), make_batch()
    for loss in (m.d_loss(batch)[0], m.g_loss(batch)[0]): loss.backward()
    assert all(p.grad is None for p in [*m.damsm_text.parameters(), *m.damsm_image.parameters()])
    m.train()
    assert not m.damsm_text.training and not m.damsm_image.training and m.netG.training

def test_scl_needs_pairs_and_encoders():
    from t2i_nb.core import T2IError
    m, batch = make_gan('dte', 'supcon'), make_batch()
    odd = tuple(x[:7] for x in batch)
    with pytest.raises(T2IError, match='even label-pair batch'): m.g_loss(odd)
    with pytest.raises(T2IError, match='needs the pre-trained'):
        T2IGAN(T2IConfig(text='dte', scl='supcon', gan=GANConfig(img_size=S, nf=8), dte=TextEmbedConfig(ntoken=V)))

def test_config_roundtrip_and_checkpoint_shape():
    m = make_gan('dte-shared', 'ce')
    cfg2 = T2IConfig.from_json(m.cfg.to_json())
    assert cfg2 == m.cfg
    m2 = T2IGAN(cfg2, RNNEncoder(V, ninput=32, nhidden=256), CNNEncoder(nef=256, img_size=S, nf=8), n_classes=4)  # the data's class count
    m2.load_state_dict(m.state_dict(), strict=True)


@pytest.mark.parametrize('text, forwards', [('damsm', 1), ('dte', 2)])
def test_engine_generates_once_per_iteration_with_a_frozen_text_side(text, forwards):
    "DF-GAN's official loop: with a frozen condition the D step's generation is reused by the G step; a trained text side generates again."
    from t2i_nb.engine import GANTrainer
    m, batch = make_gan(text, 'supcon'), make_batch()
    calls, orig = [], m.backbone.generate
    m.backbone.generate = lambda *a, **k: calls.append(1) or orig(*a, **k)
    tr = GANTrainer(m)
    g0 = [p.detach().clone() for p in m.g_parameters()]
    tr.train_step(batch)
    assert len(calls) == forwards
    assert any(not torch.equal(a, p) for a, p in zip(g0, m.g_parameters()))      # G trained through the reused forward
    tr.n_critic, tr.step = 2, 2; calls.clear()
    tr.train_step(batch)                                                           # a D step with no G step after it
    assert not tr.did_g and len(calls) == 1 and '_kept' not in m.__dict__          # nothing kept alive for a G step that never comes
