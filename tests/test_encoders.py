"Tests of t2i_nb.encoders that do not fit the notebook: every loading failure, unusual batches, devices."
import pickle
import pytest
import torch
import torch.nn as nn
import torchvision

from t2i_nb.core import T2IError, set_seed
from t2i_nb.data import Vocab
from t2i_nb.encoders import (INCEPTION_BLOCKS, CNNEncoder, DualTextEmbedding, InceptionEncoder, RNNEncoder,
                             TextEmbedConfig, TransformerTextEncoder, build_image_encoder, build_text_encoder,
                             count_params, length_mask, load_attngan_damsm, load_strict)

torch.set_num_threads(1)
NTOK = 40

def _batch(B=5, T=18, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 18, 1, 12, 3][:B])  # deliberately unsorted
    tokens = torch.randint(2, NTOK, (B, T), generator=g)
    tokens[length_mask(lengths, T) == 0] = 0
    return tokens, lengths

TEXT_ENCODERS = {
    'rnn': lambda: RNNEncoder(NTOK),
    'rnn-2layers': lambda: RNNEncoder(NTOK, nlayers=2),
    'rnn-unidirectional': lambda: RNNEncoder(NTOK, bidirectional=False),
    'transformer-mean': lambda: TransformerTextEncoder(NTOK),
    'transformer-cls': lambda: TransformerTextEncoder(NTOK, pool='cls'),
}

@pytest.fixture(params=list(TEXT_ENCODERS))
def text_encoder(request):
    set_seed(0)
    return TEXT_ENCODERS[request.param]().eval().requires_grad_(False)

# ---------------------------------------------------------------- text encoders

def test_text_shapes_and_zero_padding(text_encoder):
    tokens, lengths = _batch()
    words, sent = text_encoder(tokens, lengths)
    assert words.shape == (5, 256, 18) and sent.shape == (5, 256)
    assert (words.abs().sum(1) != 0).eq(length_mask(lengths, 18)).all()  # non-zero exactly at real tokens

def test_unsorted_batch_matches_each_caption_alone(text_encoder):
    "Packing with unsorted lengths must give every caption its own features, in the caller's order."
    tokens, lengths = _batch()
    words, sent = text_encoder(tokens, lengths)
    for i, n in enumerate(lengths.tolist()):
        w1, s1 = text_encoder(tokens[i:i+1, :n], lengths[i:i+1])
        torch.testing.assert_close(words[i:i+1, :, :n], w1, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(sent[i:i+1], s1, atol=1e-5, rtol=1e-4)

def test_padding_invariance(text_encoder):
    "Longer padding (filled with junk ids) and a batch of other captions change nothing."
    tokens, lengths = _batch()
    words, sent = text_encoder(tokens, lengths)
    junk = torch.randint(0, NTOK, (5, 10))
    w2, s2 = text_encoder(torch.cat([tokens, junk], 1), lengths)
    torch.testing.assert_close(w2[..., :18], words, atol=1e-5, rtol=1e-4)
    assert w2[..., 18:].abs().sum() == 0
    torch.testing.assert_close(s2, sent, atol=1e-5, rtol=1e-4)
    # the same captions batched in reverse order with others
    other, olen = _batch(seed=1)
    w3, s3 = text_encoder(torch.cat([other, tokens.flip(0)]), torch.cat([olen, lengths.flip(0)]))
    torch.testing.assert_close(s3[5:].flip(0), sent, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w3[5:].flip(0), words, atol=1e-5, rtol=1e-4)

def test_rnn_sentence_is_final_hidden_state():
    enc = RNNEncoder(NTOK).eval()
    tokens, lengths = _batch()
    with torch.no_grad(): words, sent = enc(tokens, lengths)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(sent[i, :128], words[i, :128, n - 1])
        torch.testing.assert_close(sent[i, 128:], words[i, 128:, 0])

def test_rnn_attngan_names_and_dropout():
    enc = RNNEncoder(NTOK)
    assert isinstance(enc.encoder, nn.Embedding) and enc.encoder.weight.shape == (NTOK, 300)
    assert isinstance(enc.drop, nn.Dropout) and enc.drop.p == 0.5
    assert enc.rnn.batch_first and enc.rnn.bidirectional and enc.rnn.hidden_size == 128 and enc.rnn.num_layers == 1
    assert sorted(enc.state_dict()) == sorted(['encoder.weight'] + [f'rnn.{w}_{x}_l0{s}' for w in ('weight', 'bias')
                                              for x in ('ih', 'hh') for s in ('', '_reverse')])
    tokens, lengths = _batch()
    enc.train()
    a, b = enc(tokens, lengths)[1], enc(tokens, lengths)[1]
    assert not torch.allclose(a, b)  # dropout is active in training

def test_empty_caption_and_bad_lengths():
    enc = RNNEncoder(NTOK).eval()
    w, s = enc(torch.zeros(2, 4, dtype=torch.long), torch.tensor([0, 4]))  # empty caption: one pad token, no crash
    assert w.shape == (2, 256, 4) and torch.isfinite(s).all()
    t = TransformerTextEncoder(NTOK).eval()
    assert torch.isfinite(t(torch.zeros(2, 4, dtype=torch.long), torch.tensor([0, 4]))[1]).all()
    with pytest.raises(T2IError, match='exceeds the padded length'): enc(torch.zeros(2, 4, dtype=torch.long), torch.tensor([5, 1]))
    with pytest.raises(T2IError, match=r'lengths must be \[B\]'): enc(torch.zeros(2, 4, dtype=torch.long), torch.tensor([1]))
    with pytest.raises(T2IError, match=r'tokens must be \[B, T\]'): enc(torch.zeros(4, dtype=torch.long), torch.tensor([1]))

def test_text_factory():
    assert isinstance(build_text_encoder('rnn', 5), RNNEncoder)
    assert build_text_encoder('transformer', 5, d_model=32, nhead=2, nlayers=1).out_dim == 32
    with pytest.raises(T2IError, match="unknown text encoder 'gru'"): build_text_encoder('gru', 5)
    with pytest.raises(T2IError, match="no option 'd_model'"): build_text_encoder('rnn', 5, d_model=3)
    with pytest.raises(T2IError, match='ntoken'): build_text_encoder('rnn', 0)
    with pytest.raises(T2IError, match='must be even'): RNNEncoder(5, nhidden=255)

def test_real_vocab_batches():
    vocab = Vocab(['<pad>', '<unk>', 'a', 'red', 'small', 'circle', 'on', 'blue', 'square'])
    tokens, lengths = vocab.encode_batch(['a red circle', 'a small blue square on a red circle', 'a zebra'])
    dte = DualTextEmbedding(ntoken=len(vocab)).eval()
    with torch.no_grad(): out = dte(tokens, lengths)
    assert out.words.shape == (3, 256, 18) and out.mask.sum(1).tolist() == lengths.tolist()

# ---------------------------------------------------------------- AttnGAN DAMSM files

def attngan_text_sd(ntoken=30, ninput=300, h=128):
    "AttnGAN's RNN_ENCODER state dict, names and shapes written out by hand."
    sd = {'encoder.weight': torch.randn(ntoken, ninput)}
    for sfx in ('', '_reverse'):
        sd.update({f'rnn.weight_ih_l0{sfx}': torch.randn(4*h, ninput), f'rnn.weight_hh_l0{sfx}': torch.randn(4*h, h),
                   f'rnn.bias_ih_l0{sfx}': torch.randn(4*h), f'rnn.bias_hh_l0{sfx}': torch.randn(4*h)})
    return sd

def attngan_image_sd(nef=256, with_counters=False):
    "AttnGAN's CNN_ENCODER state dict: torchvision's Inception-v3 blocks + emb_features + emb_cnn_code."
    tv = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).state_dict()
    sd = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in tv.items()
          if k.split('.')[0] in INCEPTION_BLOCKS and (with_counters or not k.endswith('num_batches_tracked'))}
    sd.update({'emb_features.weight': torch.randn(nef, 768, 1, 1), 'emb_cnn_code.weight': torch.randn(nef, 2048),
               'emb_cnn_code.bias': torch.randn(nef)})
    return sd

@pytest.fixture
def damsm_files(tmp_path):
    words = ['<end>', 'a', 'bird', 'with', 'red', 'wings'] + [f'w{i}' for i in range(24)]
    ixtoword = dict(enumerate(words)); wordtoix = {w: i for i, w in ixtoword.items()}
    with open(tmp_path/'captions.pickle', 'wb') as f:
        pickle.dump([[[1, 2, 3]], [[1, 4, 5]], ixtoword, wordtoix], f, protocol=2)
    tsd, isd = attngan_text_sd(), attngan_image_sd()
    torch.save(tsd, tmp_path/'text_encoder200.pth'); torch.save(isd, tmp_path/'image_encoder200.pth')
    return tmp_path, tsd, isd

def test_load_attngan_damsm_strict(damsm_files):
    d, tsd, isd = damsm_files
    text, image, vocab = load_attngan_damsm(d/'text_encoder200.pth', d/'image_encoder200.pth', d/'captions.pickle')
    assert isinstance(text, RNNEncoder) and isinstance(image, InceptionEncoder) and isinstance(vocab, Vocab)
    assert not text.training and not image.training
    tl, il = text.state_dict(), image.state_dict()
    assert set(tl) == set(tsd)
    for k, v in tsd.items(): assert torch.equal(tl[k], v), k
    for k, v in isd.items(): assert torch.equal(il[k], v), k
    assert len(vocab) == 30 == text.ntoken and vocab.pad_idx == 0
    tokens, lengths = vocab.encode_batch(['a bird with red wings', 'red wings'])
    with torch.no_grad(): w, s = text(tokens, lengths)
    assert w.shape == (2, 256, 18) and s.shape == (2, 256)

def test_load_text_only_and_wrapped_checkpoints(damsm_files):
    d, tsd, _ = damsm_files
    torch.save({'state_dict': {f'module.{k}': v for k, v in tsd.items()}}, d/'wrapped.pth')
    text, image, vocab = load_attngan_damsm(d/'wrapped.pth')
    assert image is None and vocab is None
    assert torch.equal(text.state_dict()['rnn.weight_ih_l0'], tsd['rnn.weight_ih_l0'])

def test_load_with_bn_counters(tmp_path):
    "Files saved by recent PyTorch carry num_batches_tracked; they load too."
    torch.save(attngan_text_sd(), tmp_path/'t.pth'); torch.save(attngan_image_sd(with_counters=True), tmp_path/'i.pth')
    assert load_attngan_damsm(tmp_path/'t.pth', tmp_path/'i.pth')[1] is not None

def test_load_other_rnn_shapes(tmp_path):
    "ntoken, width, depth and direction are read from the file."
    src = RNNEncoder(17, ninput=50, nhidden=64, nlayers=2)
    torch.save(src.state_dict(), tmp_path/'t.pth')
    text = load_attngan_damsm(tmp_path/'t.pth')[0]
    assert (text.ntoken, text.ninput, text.out_dim, text.nlayers, text.ndir) == (17, 50, 64, 2, 2)
    src = RNNEncoder(17, nhidden=64, bidirectional=False)
    torch.save(src.state_dict(), tmp_path/'u.pth')
    assert load_attngan_damsm(tmp_path/'u.pth')[0].ndir == 1

@pytest.mark.parametrize('edit, match', [
    (lambda sd: sd.pop('rnn.weight_hh_l0_reverse'), "missing key 'rnn.weight_hh_l0_reverse'"),
    (lambda sd: sd.update({'rnn.weight_ih_l9': torch.zeros(1)}), "unexpected key 'rnn.weight_ih_l9'"),
    (lambda sd: sd.update({'rnn.bias_hh_l0': torch.zeros(7)}), "shape mismatch for 'rnn.bias_hh_l0': file has \\[7\\], model expects \\[512\\]"),
    (lambda sd: sd.pop('encoder.weight'), "missing key 'encoder.weight'"),
])
def test_text_state_dict_mismatch(tmp_path, edit, match):
    sd = attngan_text_sd(); edit(sd)
    torch.save(sd, tmp_path/'t.pth')
    with pytest.raises(T2IError, match=match) as e: load_attngan_damsm(tmp_path/'t.pth')
    assert '\n' not in str(e.value)

def test_image_state_dict_mismatch(damsm_files):
    d, _, isd = damsm_files
    bad = dict(isd); bad.pop('Mixed_6b.branch7x7_2.conv.weight')
    torch.save(bad, d/'i1.pth')
    with pytest.raises(T2IError, match="missing key 'Mixed_6b.branch7x7_2.conv.weight'"): load_attngan_damsm(d/'text_encoder200.pth', d/'i1.pth')
    torch.save({**isd, 'fc.weight': torch.zeros(1000, 2048)}, d/'i2.pth')
    with pytest.raises(T2IError, match="unexpected key 'fc.weight'"): load_attngan_damsm(d/'text_encoder200.pth', d/'i2.pth')
    torch.save({**isd, 'emb_features.weight': torch.zeros(256, 768, 3, 3)}, d/'i3.pth')
    with pytest.raises(T2IError, match="shape mismatch for 'emb_features.weight'"): load_attngan_damsm(d/'text_encoder200.pth', d/'i3.pth')
    torch.save(attngan_image_sd(nef=128), d/'i4.pth')
    with pytest.raises(T2IError, match='not one DAMSM pair'): load_attngan_damsm(d/'text_encoder200.pth', d/'i4.pth')
    torch.save(attngan_text_sd(), d/'not_image.pth')
    with pytest.raises(T2IError, match='not an AttnGAN DAMSM image encoder'): load_attngan_damsm(d/'text_encoder200.pth', d/'not_image.pth')

def test_missing_and_unreadable_files(damsm_files):
    d, _, _ = damsm_files
    for args, match in [((d/'nope.pth',), 'DAMSM text encoder not found at'),
                        ((d/'text_encoder200.pth', d/'nope.pth'), 'DAMSM image encoder not found at'),
                        ((d/'text_encoder200.pth', None, d/'nope.pickle'), 'captions pickle not found at')]:
        with pytest.raises(T2IError, match=match): load_attngan_damsm(*args)
    (d/'garbage.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(T2IError, match='cannot read DAMSM text encoder'): load_attngan_damsm(d/'garbage.pth')
    torch.save(nn.Linear(2, 2), d/'model.pth')
    with pytest.raises(T2IError, match=r'save model\.state_dict\(\)'): load_attngan_damsm(d/'model.pth')
    torch.save([torch.zeros(1)], d/'list.pth')
    with pytest.raises(T2IError, match='does not hold a state dict'): load_attngan_damsm(d/'list.pth')

def test_bad_captions_pickle(damsm_files):
    d, _, _ = damsm_files
    with open(d/'short.pickle', 'wb') as f: pickle.dump([[], []], f)
    with pytest.raises(T2IError, match="expected AttnGAN's captions.pickle"): load_attngan_damsm(d/'text_encoder200.pth', None, d/'short.pickle')
    ixtoword = {i: f'w{i}' for i in range(31)}
    with open(d/'big.pickle', 'wb') as f: pickle.dump([[], [], ixtoword, {w: i for i, w in ixtoword.items()}], f)
    with pytest.raises(T2IError, match='has 31 words but the text encoder has 30'): load_attngan_damsm(d/'text_encoder200.pth', None, d/'big.pickle')
    with open(d/'evil.pickle', 'wb') as f: pickle.dump([[], [], {0: nn.Linear}, {}], f)
    with pytest.raises(T2IError, match='refuses'): load_attngan_damsm(d/'text_encoder200.pth', None, d/'evil.pickle')

def test_load_strict_helper():
    m = nn.Linear(3, 2)
    with pytest.raises(T2IError, match="missing key 'bias'"): load_strict(m, {'weight': torch.zeros(2, 3)})
    load_strict(m, {'weight': torch.ones(2, 3), 'bias': torch.ones(2)})
    assert m.weight.sum() == 6

# ---------------------------------------------------------------- image encoders

@pytest.mark.parametrize('size, nf, local', [(64, 32, 8), (32, 16, 8), (128, 32, 16), (256, 16, 32)])
def test_cnn_encoder_shapes(size, nf, local):
    enc = CNNEncoder(nef=128, img_size=size, nf=nf)
    loc, glob = enc(torch.rand(2, 3, size, size) * 2 - 1)
    assert loc.shape == (2, 128, local, local) and glob.shape == (2, 128) and enc.local_size == local

def test_cnn_encoder_resizes_and_validates():
    enc = CNNEncoder()
    assert enc(torch.zeros(2, 3, 100, 80))[0].shape == (2, 256, 8, 8)
    with pytest.raises(T2IError, match='RGB images'): enc(torch.zeros(3, 64, 64))

def test_inception_encoder_forward_and_freezing():
    set_seed(0)
    enc = InceptionEncoder(nef=64)
    assert {n.split('.')[0] for n, p in enc.named_parameters() if p.requires_grad} == {'emb_features', 'emb_cnn_code'}
    assert count_params(enc, trainable=True) == 768 * 64 + 2048 * 64 + 64
    enc.train()
    assert not any(m.training for m in enc.backbone()) and enc.emb_cnn_code.training
    before = enc.Mixed_5b.branch1x1.bn.running_mean.clone()
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_()
    loc, glob = enc(x)                            # the one Inception forward of this file
    assert loc.shape == (2, 64, 17, 17) and glob.shape == (2, 64)
    glob.sum().backward()
    assert x.grad.abs().sum() > 0                 # gradients reach the images through the frozen backbone
    assert torch.equal(before, enc.Mixed_5b.branch1x1.bn.running_mean)  # frozen batch norm statistics
    enc.freeze(False)
    assert all(p.requires_grad for p in enc.parameters()) and enc.Mixed_5b.training

def test_inception_torchvision_weights(tmp_path):
    tv = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(tv.state_dict(), tmp_path/'inception_v3_google-0cc3c7bd.pth')
    enc = InceptionEncoder(weights_path=tmp_path/'inception_v3_google-0cc3c7bd.pth')
    own, ref = enc.state_dict(), tv.state_dict()
    for k in own:
        if not k.startswith('emb_'): assert torch.equal(own[k], ref[k]), k
    with pytest.raises(T2IError, match='Inception-v3 weights not found at .*inception_v3_google-0cc3c7bd.pth') as e:
        InceptionEncoder(weights_path=tmp_path/'missing.pth')
    assert '\n' not in str(e.value)
    sd = tv.state_dict(); sd['Mixed_7c.branch_pool.conv.weight'] = torch.zeros(1)
    torch.save(sd, tmp_path/'bad.pth')
    with pytest.raises(T2IError, match="shape mismatch for 'Mixed_7c.branch_pool.conv.weight'"): InceptionEncoder(weights_path=tmp_path/'bad.pth')

def test_image_factory():
    assert isinstance(build_image_encoder('cnn', nef=32, img_size=32), CNNEncoder)
    assert isinstance(build_image_encoder('inception', nef=32), InceptionEncoder)
    with pytest.raises(T2IError, match="unknown image encoder 'resnet'"): build_image_encoder('resnet')

# ---------------------------------------------------------------- dual text embeddings

@pytest.mark.parametrize('mode', ['dual-heads', 'dual-encoders', 'shared'])
@pytest.mark.parametrize('encoder', ['rnn', 'transformer'])
def test_dual_embedding_modes(mode, encoder):
    set_seed(0)
    dte = DualTextEmbedding(TextEmbedConfig(mode=mode, encoder=encoder, ntoken=NTOK, emb_dim=128)).eval()
    tokens, lengths = _batch()
    with torch.no_grad(): out = dte(tokens, lengths)
    assert out.s_g.shape == out.s_d.shape == (5, 128) and out.words.shape == (5, 256, 18)
    assert (out.s_g is out.s_d) == (mode == 'shared')
    assert (out.words_g is out.words) == (mode != 'dual-encoders')
    if mode != 'shared': assert not torch.allclose(out.s_g, out.s_d)
    assert out.kl.item() == 0 and torch.equal(out.mask, length_mask(lengths, 18))
    groups = [dte.params_shared(), dte.params_g(), dte.params_d()]
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in dte.parameters()}  # a partition
    c = dte.param_counts()
    print(mode, encoder, c)
    assert c['shared'] + c['g'] + c['d'] == c['total'] == count_params(dte)
    if mode == 'shared': assert c['g'] == c['d'] == 0
    if mode == 'dual-encoders': assert c['shared'] == 0 and c['g'] == c['d']

@pytest.mark.parametrize('mode', ['dual-heads', 'dual-encoders'])
def test_gradient_routing(mode):
    dte = DualTextEmbedding(mode=mode, ntoken=NTOK, head='mlp').train()
    out = dte(*_batch())
    out.s_d.sum().backward()
    assert all(p.grad is None for p in dte.params_g())
    assert all(p.grad is not None for p in dte.params_d())
    dte.zero_grad(set_to_none=True)
    out = dte(*_batch())
    out.s_g.sum().backward()
    assert all(p.grad is None for p in dte.params_d()) and all(p.grad is not None for p in dte.params_g())

def test_conditioning_augmentation():
    set_seed(0)
    dte = DualTextEmbedding(ntoken=NTOK, ca=True).train()
    tokens, lengths = _batch()
    out = dte(tokens, lengths)
    assert out.kl.ndim == 0 and out.kl.item() > 0 and out.kl.requires_grad
    dte.eval()
    with torch.no_grad():
        a, b = dte(tokens, lengths), dte(tokens, lengths)
    assert torch.equal(a.s_g, b.s_g) and a.s_g.shape == (5, 256)
    shared = DualTextEmbedding(ntoken=NTOK, ca=True, mode='shared').train()
    o = shared(tokens, lengths)
    assert o.s_g is o.s_d and o.kl.item() > 0

def test_config_and_errors():
    cfg = TextEmbedConfig(mode='dual-encoders', encoder='transformer', ntoken=9, nlayers=1, head='mlp', ca=True)
    assert TextEmbedConfig.from_json(cfg.to_json()) == cfg
    dte = DualTextEmbedding(cfg)
    assert len(dte.encoder_g.layers.layers) == 1
    with pytest.raises(T2IError, match="unknown key 'heads'"): TextEmbedConfig.from_dict({'heads': 'x'})
    with pytest.raises(T2IError, match="unknown text embedding mode"): DualTextEmbedding(mode='dual', ntoken=5)
    with pytest.raises(T2IError, match="unknown head 'conv'"): DualTextEmbedding(head='conv', ntoken=5)
    with pytest.raises(T2IError, match='vocabulary size'): DualTextEmbedding()
    with pytest.raises(T2IError, match="not 'dual-encoders'"): DualTextEmbedding(mode='dual-encoders', encoder=RNNEncoder(5))

def test_wrap_pretrained_encoder():
    enc = RNNEncoder(NTOK)
    dte = DualTextEmbedding(encoder=enc, mode='shared', emb_dim=64)
    assert dte.encoder is enc and dte(*_batch()).s_g.shape == (5, 64)

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_on_cuda():
    dev = torch.device('cuda')
    tokens, lengths = _batch()
    for mode in ('dual-heads', 'dual-encoders', 'shared'):
        for encoder in ('rnn', 'transformer'):
            dte = DualTextEmbedding(mode=mode, encoder=encoder, ntoken=NTOK, ca=True).to(dev)
            out = dte(tokens.to(dev), lengths)  # lengths may stay on the CPU
            assert out.s_g.device.type == 'cuda' and out.mask.device.type == 'cuda'
    loc, glob = CNNEncoder().to(dev)(torch.zeros(2, 3, 64, 64, device=dev))
    assert loc.is_cuda and glob.is_cuda
