"Tests of t2i_nb.clip that do not fit the notebook: ViT-B/32 through every loader, TorchScript archives read as data, every way a file can be wrong."
import os
import pickle
import socket
import zipfile

import pytest
import torch
import torch.nn as nn
from open_clip.model import convert_weights_to_lp

from t2i_nb.core import T2IError, set_seed
from t2i_nb.data import Vocab
from t2i_nb.encoders import count_params
from t2i_nb.clip import (CLIP_HINT, OPENAI_VIT_B32_PARAMS, ClipTextEncoder, build_clip, clip_image_features, clip_score,
                         clip_tokenize, infer_clip_config, load_clip, read_clip_file, read_torchscript_state, save_clip,
                         small_clip_config, vocab_captions)

torch.set_num_threads(1)
pytestmark = [pytest.mark.filterwarnings('ignore::FutureWarning'),            # torch.jit.script / trace are deprecated
              pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')]
TINY = small_clip_config(32, width=64, layers=1, text_width=64, text_layers=1, embed_dim=32, context_length=16)
CAPS = ['a red circle', 'a small blue square on the left of the image', '']


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    "Nothing here may open a socket (no download, no hub look-up)."
    def refuse(*a, **k): raise AssertionError('network access attempted')
    monkeypatch.setattr(socket, 'socket', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)


@pytest.fixture(autouse=True)
def no_jit_load(monkeypatch):
    "Loading must never hand a file to TorchScript."
    def refuse(*a, **k): raise AssertionError('torch.jit.load must not be called')
    monkeypatch.setattr(torch.jit, 'load', refuse)


@pytest.fixture
def tiny():
    set_seed(0)
    return build_clip(TINY).eval().requires_grad_(False)


def _feats(m, size):
    g = torch.Generator().manual_seed(1)
    img = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    ids = clip_tokenize(CAPS[:2], m.context_length)
    with torch.no_grad(): return m.encode_text(ids), clip_image_features(m, img)


def _same(a, b):
    for x, y in zip(a, b): assert torch.equal(x, y)


# ---------------------------------------------------------------- OpenAI's ViT-B/32 layout

def test_vitb32_param_count_on_meta():
    with torch.device('meta'):
        m = build_clip('ViT-B-32')
        assert count_params(m) == OPENAI_VIT_B32_PARAMS == 151_277_313
        assert count_params(build_clip(infer_clip_config(m.state_dict()))) == OPENAI_VIT_B32_PARAMS


def test_vitb32_state_dict_safetensors_and_torchscript(tmp_path):
    "A random ViT-B/32 of OpenAI's layout: state dict, safetensors, and a float16 TorchScript archive like OpenAI's."
    set_seed(0)
    big = build_clip('ViT-B-32').eval().requires_grad_(False)
    ref = _feats(big, 224)
    try:
        torch.save(big.state_dict(), tmp_path / 'ViT-B-32-sd.pt')
        save_clip(big, tmp_path / 'ViT-B-32.safetensors')
        for f in ('ViT-B-32-sd.pt', 'ViT-B-32.safetensors'):
            m = load_clip(tmp_path / f)
            assert count_params(m) == OPENAI_VIT_B32_PARAMS and not m.training
            _same(_feats(m, 224), ref)
        convert_weights_to_lp(big)                      # OpenAI's archives hold float16 weights
        torch.jit.script(big).save(tmp_path / 'ViT-B-32.pt')
        m = load_clip(tmp_path / 'ViT-B-32.pt')
        _same(_feats(m, 224), _feats(big.float(), 224))
    finally:
        for f in tmp_path.iterdir(): f.unlink()         # 1.5 GB: do not leave it in pytest's kept folders


# ---------------------------------------------------------------- TorchScript archives, read as data

@pytest.mark.parametrize('how, half', [('script', False), ('script', True), ('trace', False)])   # a float16 model traces only on a GPU
def test_torchscript_archive_loads_identically(tmp_path, tiny, how, half):
    m = build_clip(TINY).eval().requires_grad_(False)
    m.load_state_dict(tiny.state_dict())
    if half: convert_weights_to_lp(m)
    if how == 'script': ts = torch.jit.script(m)
    else:
        ts = torch.jit.trace_module(m, {'encode_text': (clip_tokenize(CAPS, 16),), 'encode_image': (torch.zeros(2, 3, 32, 32),)})
    ts.save(tmp_path / 'tiny.pt')
    sd = read_torchscript_state(tmp_path / 'tiny.pt')
    for k, v in m.state_dict().items(): assert sd[k].dtype == v.dtype and torch.equal(sd[k], v), k
    kind = read_clip_file(tmp_path / 'tiny.pt').kind
    assert kind == 'torchscript'
    _same(_feats(load_clip(tmp_path / 'tiny.pt'), 32), _feats(m.float(), 32))


@pytest.fixture
def archive(tmp_path, tiny):
    torch.jit.script(tiny).save(tmp_path / 'tiny.pt')
    return tmp_path / 'tiny.pt'


def _swap(src, dst, name_end, payload):
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, 'w') as zo:
        for n in zi.namelist():
            if n.endswith(name_end):
                if payload is None: continue
                zo.writestr(n, payload)
            else: zo.writestr(n, zi.read(n))
    return dst


class _System:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))


def test_torchscript_refuses_code(tmp_path, archive):
    marker = tmp_path / 'pwned'
    for proto in (0, 2, pickle.HIGHEST_PROTOCOL):
        evil = _swap(archive, tmp_path / 'evil.pt', '/data.pkl', pickle.dumps(_System(marker), protocol=proto))
        with pytest.raises(T2IError, match=r'asks for posix\.system while loading.*never runs code'):
            load_clip(evil)
        assert not marker.exists()


@pytest.mark.parametrize('payload, msg', [
    (b'\x80\x02ccollections\nOrderedDict\n)R}b.', 'asks for BUILD on a OrderedDict'),          # no __setstate__ but ours
    (b'\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.', r'asks for builtins\.eval'),
    (b'\x80\x02ctorch\nload\n.', r'asks for torch\.load'),
    (b'\x80\x02X\x03\x00\x00\x00abcQ.', 'unknown persistent id'),
    (b'\x80\x02}.', 'holds a dict, not a TorchScript module'),
])
def test_torchscript_refuses_other_pickles(tmp_path, archive, payload, msg):
    with pytest.raises(T2IError, match=msg):
        read_torchscript_state(_swap(archive, tmp_path / 'bad.pt', '/data.pkl', payload))


def test_torchscript_missing_or_short_storage(tmp_path, archive):
    with pytest.raises(T2IError, match='truncated or corrupt'):
        load_clip(_swap(archive, tmp_path / 'nostorage.pt', '/data/0', None))
    with pytest.raises(T2IError, match='truncated or corrupt'):
        load_clip(_swap(archive, tmp_path / 'short.pt', '/data/0', b'\x00' * 8))


# ---------------------------------------------------------------- every way a file can be wrong: one line

def _one_line(excinfo): assert '\n' not in str(excinfo.value)


def test_missing_path_folder_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv('T2I_CLIP', raising=False)
    for args, msg in [((), 'no CLIP weights given'), ((tmp_path / 'ViT-B-32.pt',), 'CLIP weights not found at'),
                      ((tmp_path,), 'is a folder')]:
        with pytest.raises(T2IError, match=msg) as e: load_clip(*args)
        _one_line(e)
        assert 't2i_pretrain --encoder clip' in str(e.value) and 'ViT-B-32.pt' in str(e.value)
    monkeypatch.setenv('T2I_CLIP', str(tmp_path / 'gone.safetensors'))
    with pytest.raises(T2IError, match='gone.safetensors'): load_clip()


@pytest.mark.parametrize('kind', ['torchscript', 'state_dict', 'legacy', 'safetensors'])
@pytest.mark.parametrize('frac', [0.02, 0.5, 0.98])
def test_truncated_files(tmp_path, tiny, kind, frac):
    p = tmp_path / 'w'
    if kind == 'torchscript': torch.jit.script(tiny).save(p)
    elif kind == 'state_dict': torch.save(tiny.state_dict(), p)
    elif kind == 'legacy': torch.save(tiny.state_dict(), p, _use_new_zipfile_serialization=False)
    else: save_clip(tiny, p)
    data = p.read_bytes()
    (tmp_path / 'cut').write_bytes(data[:int(len(data) * frac)])
    with pytest.raises(T2IError, match='truncated') as e: load_clip(tmp_path / 'cut')
    _one_line(e)


@pytest.mark.parametrize('content, msg', [
    (b'', 'not a CLIP weights file'),
    (b'hello, this is not a model' * 10, 'not a CLIP weights file'),
])
def test_not_weights(tmp_path, content, msg):
    (tmp_path / 'x.pt').write_bytes(content)
    with pytest.raises(T2IError, match=msg) as e: load_clip(tmp_path / 'x.pt')
    _one_line(e)


def test_zip_that_is_not_torchscript(tmp_path):
    with zipfile.ZipFile(tmp_path / 'x.pt', 'w') as z: z.writestr('readme.txt', 'hi')
    with pytest.raises(T2IError, match='not a CLIP weights file'): load_clip(tmp_path / 'x.pt')
    with pytest.raises(T2IError, match='not a TorchScript archive'): read_torchscript_state(tmp_path / 'x.pt')


def test_not_a_clip(tmp_path, tiny):
    cases = {
        'damsm.pth': {'encoder.weight': torch.zeros(5, 3), 'rnn.weight_ih_l0': torch.zeros(4, 3)},
        'resnet.pth': {'visual.layer1.0.conv1.weight': torch.zeros(1)},
        'nonsquare.pth': tiny.state_dict() | {'visual.positional_embedding': torch.zeros(18, 64)},
        'proj.pth': tiny.state_dict() | {'visual.proj': torch.zeros(64, 31)},
        'shape.pth': tiny.state_dict() | {'ln_final.bias': torch.zeros(3)},
        'missing.pth': {k: v for k, v in tiny.state_dict().items() if k != 'visual.ln_post.weight'},
        'extra.pth': tiny.state_dict() | {'visual.extra': torch.zeros(1)},
        'model.pt': nn.Linear(2, 2),
        'list.pt': [1, 2, 3],
    }
    msgs = {'damsm.pth': "not a CLIP ViT checkpoint: no 'visual.conv1.weight'", 'resnet.pth': 'ResNet CLIP',
            'nonsquare.pth': 'not a square grid', 'proj.pth': 'projections differ',
            'shape.pth': "shape mismatch for 'ln_final.bias'", 'missing.pth': "missing key 'visual.ln_post.weight'",
            'extra.pth': "unexpected key 'visual.extra'", 'model.pt': r'save model\.state_dict\(\)',
            'list.pt': 'does not hold a state dict'}
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(T2IError, match=msgs[name]) as e: load_clip(tmp_path / name)
        _one_line(e)


def test_openai_extras_and_wrapped_checkpoints(tmp_path, tiny):
    "OpenAI-converted state dicts carry input_resolution / context_length / vocab_size; checkpoints wrap and prefix."
    sd = tiny.state_dict() | {'input_resolution': torch.tensor(32), 'context_length': torch.tensor(16), 'vocab_size': torch.tensor(49408)}
    torch.save(sd, tmp_path / 'a.pt')
    torch.save({'model': {'module.' + k: v for k, v in tiny.state_dict().items()}, 'step': 7}, tmp_path / 'b.pt')
    ref = _feats(tiny, 32)
    for f in ('a.pt', 'b.pt'): _same(_feats(load_clip(tmp_path / f), 32), ref)


def test_config_in_safetensors_for_other_head_widths(tmp_path):
    "Heads cannot be read from shapes: save_clip records the config, a bare state dict with odd widths is refused."
    cfg = small_clip_config(32, width=64, layers=1, text_width=64, text_layers=1, embed_dim=32, context_length=16)
    cfg['vision_cfg']['head_width'] = 32; cfg['text_cfg']['heads'] = 4      # 2 and 4 heads instead of 1 and 1
    set_seed(0)
    m = build_clip(cfg).eval().requires_grad_(False)
    save_clip(m, tmp_path / 'm.safetensors')
    _same(_feats(load_clip(tmp_path / 'm.safetensors'), 32), _feats(m, 32))
    odd = build_clip(small_clip_config(32, width=64, layers=1, text_width=64, text_layers=1) | {}).state_dict()
    odd['ln_final.weight'] = torch.ones(96)
    with pytest.raises(T2IError, match='not multiples of 64'): infer_clip_config(odd)


def test_device_and_frozen(tmp_path, tiny):
    save_clip(tiny, tmp_path / 't.safetensors')
    m = load_clip(tmp_path / 't.safetensors', device='cpu')
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    assert all(p.dtype == torch.float32 for p in m.parameters())


# ---------------------------------------------------------------- the text side

def test_text_side_shapes_padding_and_interface(tiny):
    vocab = Vocab.build(CAPS)
    enc = ClipTextEncoder(tiny, vocab)
    tok, lens = vocab.encode_batch(CAPS[:2] + ['a circle'])
    words, sent = enc(tok, lens)
    assert words.shape == (3, 32, 16) and sent.shape == (3, 32) and enc.out_dim == 32
    out = enc.encode(vocab_captions(tok, lens, vocab))
    assert torch.equal(out.sent, sent) and torch.equal(out.words, words)
    n_real = out.mask.sum(1)
    assert n_real.tolist() == [2 + 3, 2 + 10, 2 + 2]        # start + words + EOT (BPE: one token per word here)
    for i, n in enumerate(n_real.tolist()):
        assert words[i, :, n:].abs().sum() == 0
        torch.testing.assert_close(words[i, :, n - 1], sent[i])
    assert not sent.requires_grad                           # frozen: no graph is built


def test_text_side_empty_long_and_batch_invariance(tiny):
    enc = ClipTextEncoder(tiny)
    long = ' '.join(['bird'] * 40)
    out = enc.encode(['', long, 'a red circle'])
    assert out.mask.sum(1).tolist() == [2, 16, 5]           # empty: start + EOT; long: cut to the context, EOT kept
    assert out.ids[1, -1].item() == 49407
    for i, c in enumerate(['', long, 'a red circle']):
        one = enc.encode([c])
        torch.testing.assert_close(one.sent[0], out.sent[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(one.words[0], out.words[i], atol=1e-5, rtol=1e-5)
    assert enc.encode([]).sent.shape == (0, 32)


def test_text_side_errors_and_unfrozen_gradients(tiny):
    enc = ClipTextEncoder(tiny)
    with pytest.raises(T2IError, match='has no vocabulary'): enc(torch.ones(1, 3).long(), torch.tensor([3]))
    with pytest.raises(T2IError, match='end-of-text token'): enc.encode_ids(torch.ones(2, 16).long())
    with pytest.raises(T2IError, match='context length'): enc.encode_ids(clip_tokenize(['a'], 20))
    with pytest.raises(T2IError, match='OpenAI-layout'): ClipTextEncoder(nn.Linear(2, 2))
    vocab = Vocab(['<pad>', '<unk>', 'a'])
    with pytest.raises(T2IError, match='do not belong together'): vocab_captions(torch.tensor([[2, 9]]), torch.tensor([2]), vocab)
    trainable = build_clip(TINY)
    enc = ClipTextEncoder(trainable, freeze=False).train()
    enc.encode(['a red circle']).sent.sum().backward()
    assert trainable.token_embedding.weight.grad is not None


def test_clip_tokenize_errors():
    with pytest.raises(T2IError, match='cannot hold'): clip_tokenize(['a'], 1)
    with pytest.raises(T2IError, match='caption strings'): clip_tokenize([3])


# ---------------------------------------------------------------- image side and CLIP score

def test_image_features_resize_and_score(tiny):
    for size in (16, 32, 64):
        assert clip_image_features(tiny, torch.zeros(2, 3, size, size)).shape == (2, 32)
    imgs = torch.rand(3, 3, 64, 64) * 4 - 2                  # out of range: the score clamps to [-1, 1]
    s = clip_score(tiny, imgs, CAPS, reduce=False)
    assert s.shape == (3,) and (s >= 0).all() and (s <= 100).all()
    torch.testing.assert_close(s, clip_score(tiny, imgs.clamp(-1, 1), clip_tokenize(CAPS, 16), reduce=False))
    g = clip_score(tiny, imgs, CAPS, w=1, clip_at_zero=False, mode='galip')
    assert -1 <= g <= 1
    with pytest.raises(T2IError, match="unknown CLIP pre-processing 'bilinear'"): clip_score(tiny, imgs, CAPS, mode='bilinear')
    with pytest.raises(T2IError, match='3 images but 2 captions'): clip_score(tiny, imgs, CAPS[:2])
