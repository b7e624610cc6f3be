"""Tests of `t2i_nb.data` that do not fit the notebook: fixtures in the real on-disk layouts (written here, independently
of the notebook's examples), fault injection (corrupt, truncated and missing files, malicious pickles), the image cache
and property tests of the label-pair sampler. Nothing here needs a real data set."""
import json, os, pickle, subprocess, sys, warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

from t2i_nb.core import T2IError
from t2i_nb.data import (CaptionDataset, LabelPairSampler, RandomBatchSampler, TextImageDataset, Vocab, bbox_crop_box,
                         dataset_summary, image_cache, load_coco, load_cub, load_flowers, load_shapes,
                         load_shapes_multi, make_shapes, make_shapes_multi, read_image, safe_unpickle)
from t2i_nb.loaders import bench_data, get_dls, show_batch


# ---------------------------------------------------------------- fixtures in the real layouts

def _jpeg(path: Path, w=64, h=48, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, format='JPEG', quality=85)


def write_cub(root: Path, n_classes=4, per_class=4, text_dir='text_c10', img_size=(64, 48)):
    """CUB-200-2011 layout: CUB_200_2011/{images.txt,...,images/} + <text_dir>/<class>/<img>.txt (10 caption lines).
    Odd images (per class) are test images in train_test_split.txt."""
    cub = root / 'CUB_200_2011'
    images, classes, labels, split, boxes = [], [], [], [], []
    i = 0
    for c in range(1, n_classes + 1):
        cname = f'{c:03d}.Species_{chr(64 + c)}'
        classes.append(f'{c} {cname}')
        for k in range(per_class):
            i += 1
            rel = f'{cname}/Species_{chr(64 + c)}_{k + 1:04d}_{1000 + i}.jpg'
            _jpeg(cub / 'images' / rel, *img_size, seed=i)
            images.append(f'{i} {rel}'); labels.append(f'{i} {c}'); split.append(f'{i} {1 - k % 2}')
            boxes.append(f'{i} 8.0 6.0 {img_size[0] / 2:.1f} {img_size[1] / 2:.1f}')
            t = root / text_dir / rel.replace('.jpg', '.txt')
            t.parent.mkdir(parents=True, exist_ok=True)
            t.write_text('\n'.join(f'this bird {k} of species {chr(97 + c)} has caption {j}' for j in range(10)) + '\n\n')
    for name, rows in [('images.txt', images), ('classes.txt', classes), ('image_class_labels.txt', labels),
                       ('train_test_split.txt', split), ('bounding_boxes.txt', boxes)]:
        (cub / name).write_text('\n'.join(rows) + '\n')
    return root


def cub_keys(root: Path, classes):
    "AttnGAN-style filenames (class/image without extension) of the CUB fixture images of `classes` (1-based)."
    rows = [l.split() for l in (root / 'CUB_200_2011' / 'images.txt').read_text().splitlines()]
    return [p[:-4] for _, p in rows if int(p[:3]) in classes]


def write_flowers(root: Path, n=20, n_classes=4):
    labels = np.array([[1 + (i * 7) % n_classes for i in range(n)]], dtype=np.uint8)
    for i in range(1, n + 1):
        _jpeg(root / 'jpg' / f'image_{i:05d}.jpg', seed=i)
        lab = int(labels[0, i - 1])
        t = root / 'text_c10' / f'class_{lab:05d}' / f'image_{i:05d}.txt'
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text(f'this flower has {lab} yellow petals\nthe stamen is long\n')
    scipy.io.savemat(root / 'imagelabels.mat', {'labels': labels})
    ids = np.arange(1, n + 1, dtype=np.uint16)
    scipy.io.savemat(root / 'setid.mat', {'trnid': ids[None, 0::2], 'valid': ids[None, 1::4], 'tstid': ids[None, 3::4]})
    return root


COCO_CATS = [{'id': 1, 'name': 'person', 'supercategory': 'person'}, {'id': 18, 'name': 'dog', 'supercategory': 'animal'},
             {'id': 3, 'name': 'car', 'supercategory': 'vehicle'}, {'id': 90, 'name': 'toothbrush', 'supercategory': 'indoor'}]


def write_coco(root: Path, split='train', n=10):
    """COCO 2014: image k has categories COCO_CATS[k % 4] and [(k+1) % 4] except: the last image has no instance,
    the one before it has no caption."""
    imgs = [{'id': 500 + k, 'file_name': f'COCO_{split}2014_{500 + k:012d}.jpg', 'height': 48, 'width': 64} for k in range(n)]
    for im in imgs: _jpeg(root / f'{split}2014' / im['file_name'], seed=im['id'])
    caps = [{'id': 10 * k + j, 'image_id': im['id'], 'caption': f'A photo number {k} of things {j}.\n'}
            for k, im in enumerate(imgs[:-2] + imgs[-1:]) for j in range(5)]
    caps.append({'id': 99999, 'image_id': imgs[0]['id'], 'caption': '   '})  # an empty caption: ignored
    inst = [{'id': 1000 + 2 * k + j, 'image_id': im['id'], 'category_id': COCO_CATS[(k + j) % 4]['id'], 'bbox': [0, 0, 5, 5],
             'area': 25.0, 'iscrowd': 0} for k, im in enumerate(imgs[:-1]) for j in range(2)]
    ann = root / 'annotations'
    ann.mkdir(parents=True, exist_ok=True)
    (ann / f'captions_{split}2014.json').write_text(json.dumps({'images': imgs, 'annotations': caps}))
    (ann / f'instances_{split}2014.json').write_text(json.dumps({'images': imgs, 'annotations': inst, 'categories': COCO_CATS}))
    return root


@pytest.fixture
def cub(tmp_path): return write_cub(tmp_path / 'birds')


@pytest.fixture
def coco(tmp_path):
    root = write_coco(tmp_path / 'coco', 'train')
    return write_coco(root, 'val', n=6)


# ---------------------------------------------------------------- safe_unpickle

class _System:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))


class _Popen:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (subprocess.Popen, (['touch', str(self.marker)],))


@pytest.mark.parametrize('evil,name', [(_System, 'posix.system'), (_Popen, 'subprocess.Popen')])
@pytest.mark.parametrize('protocol', [0, 2, pickle.HIGHEST_PROTOCOL])
def test_safe_unpickle_refuses_code(tmp_path, evil, name, protocol):
    marker = tmp_path / 'pwned'
    p = tmp_path / 'evil.pickle'
    p.write_bytes(pickle.dumps(evil(marker), protocol=protocol))
    with pytest.raises(T2IError, match=f'refuses to load {name}.*must never run code'):
        safe_unpickle(p)
    assert not marker.exists()


def test_safe_unpickle_refuses_numpy_and_names_it(tmp_path):
    p = tmp_path / 'np.pickle'
    p.write_bytes(pickle.dumps({'a': np.arange(3)}))
    with pytest.raises(T2IError, match=r'refuses to load numpy\.'):
        safe_unpickle(p)


@pytest.mark.parametrize('protocol', [0, 1, 2, 4, 5])
def test_safe_unpickle_loads_plain_data(tmp_path, protocol):
    obj = [['001.Black_footed_Albatross/Black_Footed_Albatross_0046_18'], {0: '<end>', 1: 'bird'}, (1, 2.5, True, None),
           {3, 4}, frozenset({'x'}), b'raw', OrderedDict(a=1)]
    p = tmp_path / 'ok.pickle'
    p.write_bytes(pickle.dumps(obj, protocol=protocol))  # protocol < 3 writes Python 2 names (__builtin__.set)
    assert safe_unpickle(p) == obj


def test_safe_unpickle_bad_files(tmp_path):
    with pytest.raises(T2IError, match='no such pickle'): safe_unpickle(tmp_path / 'nope.pickle')
    (tmp_path / 'junk.pickle').write_bytes(b'this is not a pickle')
    with pytest.raises(T2IError, match='not a valid pickle'): safe_unpickle(tmp_path / 'junk.pickle')


# ---------------------------------------------------------------- Vocab

def test_vocab_build_encode_decode(tmp_path):
    v = Vocab.build(['The bird is RED, the bird.', 'a red-winged bird'], min_freq=2)
    assert v.itos == ['<pad>', '<unk>', 'bird', 'red', 'the'] and (v.pad_idx, v.unk_idx) == (0, 1) and len(v) == 5
    assert v.tokenize("It's a café-bird!") == ['it', 's', 'a', 'caf', 'bird']  # \w+ then ASCII only, as AttnGAN
    assert v.encode('the blue bird') == [4, 1, 2] and v.unknown_words('the blue bird') == ['blue']
    toks, lens = v.encode_batch(['the bird', 'red'], max_len=5)
    assert toks.tolist() == [[4, 2, 0, 0, 0], [3, 0, 0, 0, 0]] and lens.tolist() == [2, 1] and toks.dtype == torch.long
    assert v.decode(toks[0]) == 'the bird'
    with pytest.raises(T2IError, match='no word in the vocabulary'): v.encode_batch(['...'])
    assert Vocab.load(v.save(tmp_path / 'v.json')) == v
    assert not list(tmp_path.glob('.*tmp'))
    with pytest.raises(T2IError): Vocab(['a', 'a'])
    with pytest.raises(T2IError, match='no vocabulary file'): Vocab.load(tmp_path / 'missing.json')
    (tmp_path / 'bad.json').write_text('{"x": 1}')
    with pytest.raises(T2IError, match='not a vocabulary'): Vocab.load(tmp_path / 'bad.json')


def test_vocab_from_attngan(tmp_path):
    ixtoword = {0: '<end>', 1: 'this', 2: 'bird', 3: 'red'}
    wordtoix = {w: i for i, w in ixtoword.items()}
    v = Vocab.from_attngan(ixtoword, wordtoix)
    assert (v.pad_idx, v.unk_idx, v.itos) == (0, None, ['<end>', 'this', 'bird', 'red'])
    assert v.encode('this blue bird') == [1, 2]  # unknown words are dropped, as AttnGAN does
    with pytest.raises(T2IError, match='disagree'): Vocab.from_attngan(ixtoword, {**wordtoix, 'red': 1})
    with pytest.raises(T2IError, match='0..n-1'): Vocab.from_attngan({1: 'a'}, {'a': 1})
    p = tmp_path / 'captions.pickle'
    p.write_bytes(pickle.dumps([[[1, 2]], [[2, 3]], ixtoword, wordtoix], protocol=2))
    assert Vocab.from_attngan_pickle(p) == v


# ---------------------------------------------------------------- readers

def test_cub_official_split(cub):
    tr, te = load_cub(cub, 'train'), load_cub(cub, 'test')
    assert (len(tr), len(te), len(tr.classes), tr.multi_label) == (8, 8, 4, False)
    s = tr[0]
    assert s.image.exists() and s.labels == [0] and len(s.captions) == 10 and s.bbox == (8.0, 6.0, 32.0, 24.0)
    assert tr.classes[0] == '001.Species_A' and {x.labels[0] for x in te} == {0, 1, 2, 3}
    assert isinstance(tr, CaptionDataset) and tr.root == cub and tr.split == 'train' and tr.skipped == {}
    # AttnGAN crop: half side int(0.75 * 32) = 24 around the box centre (24, 18), clipped to the 64x48 image
    assert bbox_crop_box(s.bbox, 64, 48) == (0, 0, 48, 42) and tr.image(0).size == (48, 42)
    assert load_cub(cub, 'train', bbox_crop=False).image(0).size == (64, 48)


def test_cub_attngan_text_folder_and_pickled_split(tmp_path):
    root = write_cub(tmp_path / 'birds', text_dir='text')  # the AttnGAN release's folder name
    for split, classes in (('train', (1, 2, 3)), ('test', (4,))):
        (root / split).mkdir()
        (root / split / 'filenames.pickle').write_bytes(pickle.dumps(cub_keys(root, classes), protocol=2))
    tr, te = load_cub(root, 'train'), load_cub(root, 'test')
    assert (len(tr), len(te)) == (12, 4)
    assert {s.labels[0] for s in tr} == {0, 1, 2} and {s.labels[0] for s in te} == {3}  # class-disjoint
    assert len(load_cub(root, 'train', protocol='official')) == 8
    (root / 'test' / 'filenames.pickle').write_bytes(pickle.dumps(_System(tmp_path / 'x')))
    with pytest.raises(T2IError, match='refuses'): load_cub(root, 'test')


def test_cub_missing_things_are_one_line_errors(tmp_path, cub):
    for bad, match in [(tmp_path / 'nowhere', 'data set root .* not found; expected layout: ROOT/CUB_200_2011'),
                       (tmp_path, 'CUB_200_2011 not found')]:
        with pytest.raises(T2IError, match=match) as e: load_cub(bad)
        assert '\n' not in str(e.value)
    (cub / 'CUB_200_2011' / 'classes.txt').unlink()
    with pytest.raises(T2IError, match=r'classes\.txt not found; expected layout') as e: load_cub(cub)
    assert '\n' not in str(e.value)
    with pytest.raises(T2IError, match="no split 'val'"): load_cub(cub, 'val')


def test_cub_skips_and_counts(cub):
    rows = (cub / 'CUB_200_2011' / 'images.txt').read_text().split('\n')
    rel = [l.split()[1] for l in rows if l][0:3:2]  # two training images
    (cub / 'text_c10' / rel[0].replace('.jpg', '.txt')).write_text('\n   \n')  # only empty lines: no captions
    (cub / 'CUB_200_2011' / 'images' / rel[1]).unlink()                      # listed but missing
    with pytest.warns(UserWarning, match=r'skipped 1 \(missing images\), 1 \(no captions\)|skipped 1 \(no captions\), 1 \(missing images\)'):
        tr = load_cub(cub, 'train')
    assert len(tr) == 6 and tr.skipped == {'no_captions': 1, 'missing_images': 1}


def test_flowers(tmp_path):
    root = write_flowers(tmp_path / 'flowers')
    tr, va, te = (load_flowers(root, s) for s in ('train', 'val', 'test'))
    assert (len(tr), len(va), len(te)) == (10, 5, 5) and len(tr.classes) == 4
    labels = scipy.io.loadmat(root / 'imagelabels.mat')['labels'].ravel()
    assert all(s.labels == [int(labels[int(s.key[6:]) - 1]) - 1] for s in tr)
    assert tr[0].image.name == 'image_00001.jpg' and tr[0].captions[1] == 'the stamen is long' and tr[0].bbox is None
    (root / 'setid.mat').unlink()
    with pytest.raises(T2IError, match=r'setid\.mat not found; expected layout'): load_flowers(root, 'train')


def test_flowers_stackgan_split(tmp_path):
    root = write_flowers(tmp_path / 'flowers')
    for split, ids in (('train', range(1, 15)), ('test', range(15, 21))):
        (root / split).mkdir()
        (root / split / 'filenames.pickle').write_bytes(pickle.dumps([f'jpg/image_{i:05d}' for i in ids], protocol=2))
    assert len(load_flowers(root, 'train')) == 14 and len(load_flowers(root, 'test')) == 6
    with pytest.raises(T2IError, match="no 'val' split"): load_flowers(root, 'val')
    assert dataset_summary('flowers', root)['splits'].keys() == {'train', 'test'}


def test_coco(coco):
    tr = load_coco(coco, 'train')
    assert tr.classes == ['person', 'car', 'dog', 'toothbrush'] and tr.multi_label  # sorted by COCO id 1, 3, 18, 90
    assert len(tr) == 9 and tr.skipped == {'no_captions': 1}
    # image k has categories [k%4], [(k+1)%4] (in COCO_CATS order: person, dog, car, toothbrush) -> contiguous ids
    to_ix = {1: 0, 18: 2, 3: 1, 90: 3}
    assert tr[1].labels == sorted({to_ix[COCO_CATS[1]['id']], to_ix[COCO_CATS[2]['id']]})
    assert tr[-1].labels == [] and tr[-1].image.exists()  # no instance annotation: no labels, still loaded
    assert len(tr[0].captions) == 5 and tr[0].captions[0] == 'A photo number 0 of things 0.'
    assert (coco / '.t2i_cache' / 'coco_train_index.json').exists()
    assert [s.labels for s in load_coco(coco, 'train')] == [s.labels for s in tr]  # from the cached index
    assert len(load_coco(coco, 'val')) == 5
    (coco / 'annotations' / 'instances_val2014.json').unlink()
    with pytest.raises(T2IError, match=r'instances_val2014\.json not found; expected layout'): load_coco(coco, 'val')
    (coco / 'annotations' / 'captions_train2014.json').write_text('{"images": [')
    with pytest.raises(T2IError, match='not valid JSON'): load_coco(coco, 'train')


def test_shapes_loaders(tmp_path):
    root = make_shapes(tmp_path / 'shapes', n=30, size=32, seed=1)
    tr = load_shapes(root, 'train')
    assert (tr.flip, tr.crop, tr.bbox_crop) == (False, False, False)
    assert all(s.attrs is not None and s.attrs['captions'] == s.captions for s in tr)
    multi = load_shapes_multi(make_shapes_multi(tmp_path / 'multi', n=20, size=32, seed=1), 'train')
    assert multi.multi_label and all(sorted(multi.classes[l] for l in s.labels) == s.attrs['labels'] for s in multi)
    tds = TextImageDataset(tr, Vocab.build(tr.captions), size=32)
    assert not any(f for *_, f in tds.plan(list(range(len(tds))) * 5, epoch=3))  # never flipped
    with pytest.raises(T2IError, match='not shapes-multi'): load_shapes_multi(tmp_path / 'shapes')
    with pytest.raises(T2IError, match='t2i_data --make shapes'): load_shapes(tmp_path)


# ---------------------------------------------------------------- cache and corrupt images

def test_cache_reuse_rebuild_and_corrupt(cub):
    ds = load_cub(cub, 'train')
    arr, ok, path = image_cache(ds, 38)
    assert arr.shape == (8, 3, 38, 38) and arr.dtype == np.uint8 and ok.all() and path.parent == cub / '.t2i_cache'
    stamp = path.stat().st_mtime_ns
    assert image_cache(ds, 38)[2].stat().st_mtime_ns == stamp                      # reused
    assert image_cache(ds, 76)[2] != path and path.exists()                         # another size: its own file
    assert image_cache(ds, 40, progress=True)[1].all()                              # with a progress bar (shown above 2000 images)
    bad = ds[3].image
    bad.write_bytes(bad.read_bytes()[:200])                                         # truncated JPEG
    with pytest.warns(UserWarning, match='1 corrupt or unreadable'):
        arr2, ok2, path2 = image_cache(ds, 38)
    assert path2 != path and not path.exists() and ok2.tolist() == [i != 3 for i in range(8)]
    assert ds.skipped['corrupt_images'] == 1
    assert not [p for p in path.parent.iterdir() if p.name.startswith('.')]       # no temporary files left
    (cub / 'CUB_200_2011' / 'images' / ds[5].image.relative_to(cub / 'CUB_200_2011' / 'images')).write_bytes(b'not an image')
    with pytest.warns(UserWarning, match='2 corrupt'):
        tds = TextImageDataset(load_cub(cub, 'train'), Vocab.build(ds.captions), size=32)
    assert len(tds) == 6 and 3 not in tds.positions and 5 not in tds.positions


def test_raw_reading_falls_back_without_crashing(cub):
    ds = load_cub(cub, 'train')
    ds[2].image.write_bytes(b'\xff\xd8\xff garbage')
    tds = TextImageDataset(ds, Vocab.build(ds.captions), size=32, cache=False)
    with pytest.warns(UserWarning, match='skipping unreadable image'):
        items = [tds.get(*p) for p in tds.plan(range(len(tds)))]
    assert len(items) == 8 and ds.skipped['corrupt_images'] == 1
    img, tok, ln, lab, idx = items[2]
    assert idx.item() != 2 and lab.item() == ds[2].labels[0]  # another image of the same class
    assert all(it[0].shape == (3, 32, 32) for it in items)


def test_read_image_draft_matches_size(tmp_path):
    p = tmp_path / 'big.jpg'
    _jpeg(p, 500, 375)
    assert read_image(p, size=64).size[1] >= 64 and min(read_image(p, (100, 50, 200, 150), size=64).size) >= 64
    assert read_image(p).size == (500, 375)


# ---------------------------------------------------------------- samplers (hypothesis)

single_labels = st.lists(st.integers(0, 6), min_size=2, max_size=60)
multi_labels = st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=3, unique=True), min_size=2, max_size=60)


def _check_pairs(labels, bs, seed, epoch):
    s = LabelPairSampler(labels, bs, seed)
    s.set_epoch(epoch)
    norm = [[l] if isinstance(l, int) else l for l in labels]
    batches = list(s)
    assert len(batches) == len(s) and all(len(b) == bs for b in batches)
    for b in batches:
        for a, p in zip(b[:bs // 2], b[bs // 2:]):
            assert set(norm[a]) & set(norm[p])                                  # pairs share a label
            n_same = sum(1 for x in norm if set(x) & set(norm[a]))
            if n_same > 1: assert a != p                                         # distinct images when possible
    s2 = LabelPairSampler(labels, bs, seed); s2.set_epoch(epoch)
    assert list(s2) == batches                                                   # determinism
    used = [i for b in batches for i in b]
    assert all(norm[i] for i in used)                                            # unlabelled items never drawn
    eligible = [i for i, l in enumerate(norm) if l]
    assert len(s) == (len(eligible) // 2) // (bs // 2)
    return batches


@settings(max_examples=150, deadline=None)
@given(single_labels, st.sampled_from([2, 4, 8]), st.integers(0, 2**16), st.integers(0, 50))
def test_pair_sampler_single_label(labels, bs, seed, epoch):
    batches = _check_pairs(labels, bs, seed, epoch)
    for b in batches:
        for a, p in zip(b[:bs // 2], b[bs // 2:]): assert labels[a] == labels[p]


@settings(max_examples=150, deadline=None)
@given(multi_labels, st.sampled_from([2, 4, 6]), st.integers(0, 2**16), st.integers(0, 50))
def test_pair_sampler_multi_label(labels, bs, seed, epoch):
    _check_pairs(labels, bs, seed, epoch)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=40, max_size=80), st.integers(0, 1000))
def test_pair_sampler_covers_images_and_changes_with_epoch(labels, seed):
    s = LabelPairSampler(labels, 4, seed)
    e0 = list(s); s.set_epoch(1); e1 = list(s)
    assert e0 != e1
    # most images are used once per epoch: only the odd member of a class is reused
    used = [i for b in e0 for i in b]
    assert len(set(used)) >= len(used) - 4 - 2 * len(set(labels))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 100), st.integers(1, 16), st.integers(0, 99), st.booleans())
def test_random_batch_sampler(n, bs, seed, drop_last):
    s = RandomBatchSampler(n, bs, seed, drop_last)
    b = list(s)
    assert len(b) == len(s) and all(len(x) == bs for x in (b if drop_last else b[:-1]))
    flat = [i for x in b for i in x]
    assert len(set(flat)) == len(flat) and (len(flat) == n or drop_last)
    assert list(RandomBatchSampler(n, bs, seed, drop_last)) == b


def test_pair_sampler_rejects_odd_batches():
    with pytest.raises(T2IError, match='must be even'): LabelPairSampler([0, 0], 3)


# ---------------------------------------------------------------- DataLoaders

def test_get_dls_single_label_batches(cub):
    tr, te = load_cub(cub, 'train'), load_cub(cub, 'test')
    vocab = Vocab.build(tr.captions)
    dls = get_dls(tr, te, vocab, bs=4, size=32, seed=3, device='cpu')
    assert len(dls.train) == 2 and len(dls.valid) == 2 and dls.vocab is vocab
    imgs, toks, lens, labels, idx = b = dls.one_batch()
    assert imgs.shape == (4, 3, 32, 32) and imgs.dtype == torch.float32 and -1 <= imgs.min() and imgs.max() <= 1
    assert toks.shape == (4, 18) and toks.dtype == torch.long and lens.dtype == torch.long and (lens >= 1).all()
    assert labels.shape == (4,) and labels.dtype == torch.long and idx.dtype == torch.long
    assert labels[:2].tolist() == labels[2:].tolist() and labels.tolist() == [tr[i].labels[0] for i in idx.tolist()]
    assert idx[0] != idx[2] and idx[1] != idx[3]
    for t, l, i in zip(toks, lens, idx):  # the tokens are one of the image's own captions
        assert vocab.decode(t[:l]) in [' '.join(Vocab.tokenize(c)) for c in tr[i.item()].captions]
    assert show_batch(b, vocab).size[0] > 0 and dls.train.show_batch().size[0] > 0
    epochs = [[x[4].tolist() for x in dls.train] for _ in range(3)]
    assert dls.train.epoch == 3 and epochs[0] != epochs[1]
    dls.train.set_epoch(1)
    assert [x[4].tolist() for x in dls.train] == epochs[1]
    v1, v2 = ([torch.cat([x[1] for x in dls.valid])] for _ in range(2))
    assert torch.equal(v1[0], v2[0])  # validation captions are fixed
    plain = get_dls(tr, te, vocab, bs=3, size=32, pair_sampler=False, device='cpu')
    assert len(plain.train) == 2 and plain.one_batch()[0].shape[0] == 3


def test_get_dls_multi_label_and_raw(coco):
    tr, va = load_coco(coco, 'train'), load_coco(coco, 'val')
    dls = get_dls(tr, va, Vocab.build(tr.captions), bs=4, size=16, device='cpu', cache=False)
    imgs, toks, lens, labels, idx = dls.one_batch()
    assert labels.shape == (4, 4) and labels.dtype == torch.float32
    assert ((labels[:2] * labels[2:]).sum(1) > 0).all()  # each pair shares a category
    assert imgs.shape == (4, 3, 16, 16) and not list((coco / '.t2i_cache').glob('*.npy'))  # cache=False: no image cache
    unlabelled = len(tr) - 1
    assert all(unlabelled not in x[4].tolist() for x in dls.train)


def test_workers_give_the_same_batches(cub):
    tr, te = load_cub(cub, 'train'), load_cub(cub, 'test')
    vocab = Vocab.build(tr.captions)
    ref = [[t.clone() for t in b] for b in get_dls(tr, te, vocab, bs=4, size=32, device='cpu').train]
    par = [[t.clone() for t in b] for b in get_dls(tr, te, vocab, bs=4, size=32, device='cpu', num_workers=2).train]
    assert len(ref) == len(par) and all(torch.equal(x, y) for a, b in zip(ref, par) for x, y in zip(a, b))


def test_get_dls_errors(cub):
    tr = load_cub(cub, 'train')
    vocab = Vocab.build(tr.captions)
    with pytest.raises(T2IError, match='smaller --bs'): get_dls(tr, tr, vocab, bs=64, device='cpu')
    with pytest.raises(T2IError, match='must be even'): get_dls(tr, tr, vocab, bs=3, device='cpu')
    other = Vocab.build(['completely unrelated words'])
    with pytest.raises(T2IError, match='no usable image'):
        get_dls(tr, tr, Vocab(other.itos, pad_idx=0, unk_idx=None), bs=2, device='cpu')


def test_bench_data_reports(tmp_path):
    """Figures reported for the cache (run by hand, 1 thread):
    OMP_NUM_THREADS=1 python -c "from t2i_nb.loaders import bench_data; print(bench_data(sizes=(64, 256), bs=32, n_batches=20))"
    """
    r = bench_data(sizes=(32,), bs=4, n_batches=3)
    m = r['sizes'][32]
    assert m['raw_batches_per_s'] > 0 and m['cache_batches_per_s'] > 0 and m['cache_build_s'] >= 0
