"Tests of the built-in shapes data sets (t2i_nb.shapes): determinism, on-disk layouts, splits, captions, bad input."
import json, os, re, subprocess, sys, time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2i_nb.core import T2IError
from t2i_nb.shapes import (BACKGROUNDS, COLOUR_RGB, COLOURS, MULTI_TEMPLATES, POSITIONS, SHAPES, SHAPES_VERSION, SIZES,
                           TEMPLATES, class_names, fill_multi_template, fill_template, heldout_compositions,
                           make_captions, make_captions_multi, make_shapes, make_shapes_multi, parse_caption_attributes,
                           parse_caption_scene, read_attributes, read_shapes_meta, render_scene, render_shape,
                           shape_mask, template_fields, true_relations)


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def _lines(path: Path) -> list[list[str]]:
    return [l.split() for l in path.read_text().splitlines()]


@pytest.fixture(scope='module')
def shapes_set(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp('s') / 'shapes', n=150, size=48, seed=1)


@pytest.fixture(scope='module')
def multi_set(tmp_path_factory):
    return make_shapes_multi(tmp_path_factory.mktemp('m') / 'multi', n=150, size=64, seed=1)


# ---------------------------------------------------------------- determinism

@pytest.mark.parametrize('maker,kw', [(make_shapes, dict(split='image')), (make_shapes, dict(split='composition')),
                                      (make_shapes_multi, dict(split='image')), (make_shapes_multi, dict(split='composition'))])
def test_byte_identical_regeneration(tmp_path, maker, kw):
    a, b = maker(tmp_path / 'a', n=60, size=40, seed=7, **kw), maker(tmp_path / 'b', n=60, size=40, seed=7, **kw)
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys() and len(fa) > 60
    assert [k for k in fa if fa[k] != fb[k]] == []
    c = _files(maker(tmp_path / 'c', n=60, size=40, seed=8, **kw))    # another seed: other images and captions
    assert fa['attributes.jsonl'] != c['attributes.jsonl']
    assert read_shapes_meta(a)['dataset_id'] != read_shapes_meta(tmp_path / 'c')['dataset_id']


def test_identical_across_processes(tmp_path):
    "No hidden state (hash seeds, caches) leaks into the files: another interpreter writes the same bytes."
    make_shapes_multi(tmp_path / 'a', n=30, size=32, seed=4)
    code = f"from t2i_nb.shapes import make_shapes_multi; make_shapes_multi({str(tmp_path / 'b')!r}, n=30, size=32, seed=4)"
    subprocess.run([sys.executable, '-c', code], check=True, env={**os.environ, 'PYTHONHASHSEED': '12345'})
    assert _files(tmp_path / 'a') == _files(tmp_path / 'b')


def test_prefix_stability(tmp_path):
    "Image i depends only on (seed, i): a larger set starts with the same images as a smaller one."
    small, big = read_attributes(make_shapes(tmp_path / 's', n=30, seed=2)), read_attributes(make_shapes(tmp_path / 'b', n=90, seed=2))
    for a, b in zip(small, big):
        for k in ['class', 'size', 'position', 'background', 'bbox', 'captions']: assert a[k] == b[k]


# ---------------------------------------------------------------- CUB layout

def test_cub_layout(shapes_set):
    cub = shapes_set / 'CUB_200_2011'
    classes = _lines(cub / 'classes.txt')
    assert [int(c[0]) for c in classes] == list(range(1, 101))
    assert all(re.fullmatch(r'\d{3}\.[a-z_]+', c[1]) and int(c[1][:3]) == int(c[0]) for c in classes)
    assert [c[1][4:].replace('_', ' ') for c in classes] == class_names()
    images = {int(i): p for i, p in _lines(cub / 'images.txt')}
    labels = {int(i): int(c) for i, c in _lines(cub / 'image_class_labels.txt')}
    split = {int(i): int(s) for i, s in _lines(cub / 'train_test_split.txt')}
    boxes = {int(l[0]): [float(v) for v in l[1:]] for l in _lines(cub / 'bounding_boxes.txt')}
    assert list(images) == list(range(1, 151)) and labels.keys() == split.keys() == boxes.keys() == images.keys()
    assert set(split.values()) == {0, 1} and sum(1 - v for v in split.values()) == 30      # test_frac 0.2
    cls_dir = {int(c[0]): c[1] for c in classes}
    for i, rel in images.items():
        d, f = rel.split('/')
        assert d == cls_dir[labels[i]] and f.endswith('.jpg')
        img = Image.open(cub / 'images' / rel)
        assert img.format == 'JPEG' and img.size == (48, 48) and img.mode == 'RGB'
        x, y, w, h = boxes[i]
        assert 0 <= x and 0 <= y and w > 3 and h > 3 and x + w <= 48 and y + h <= 48
        caps = (shapes_set / 'text_c10' / d / f.replace('.jpg', '.txt')).read_text().splitlines()
        assert len(caps) == 10 and all(caps)
        shape = SHAPES[(labels[i] - 1) // len(COLOURS)]
        assert all(parse_caption_attributes(c)['shape'] == shape for c in caps)


def test_attributes_and_meta(shapes_set):
    rows, meta = read_attributes(shapes_set), read_shapes_meta(shapes_set)
    assert meta['version'] == SHAPES_VERSION and meta['kind'] == 'shapes'
    assert meta['vocab']['shapes'] == SHAPES and meta['vocab']['colours'] == COLOURS
    assert meta['vocab']['positions'] == POSITIONS and meta['vocab']['backgrounds'] == BACKGROUNDS
    assert meta['params'] == dict(n=150, size=48, seed=1, split='image', test_frac=0.2, captions_per_image=10)
    assert meta['counts'] == {'train': 120, 'test': 30} and len(meta['dataset_id']) == 16
    assert [r['id'] for r in rows] == list(range(1, 151))
    boxes = {int(l[0]): [float(v) for v in l[1:]] for l in _lines(shapes_set / 'CUB_200_2011' / 'bounding_boxes.txt')}
    for r in rows:
        assert r['class'] == f"{r['colour']} {r['shape']}" and (shapes_set / r['image']).exists()
        assert r['size'] in SIZES and r['position'] in POSITIONS and r['background'] in BACKGROUNDS
        assert r['bbox'] == boxes[r['id']] and r['split'] in ('train', 'test')
        assert (shapes_set / r['text']).read_text().splitlines() == r['captions']
        for cap in r['captions']:     # every caption says only true things about its image
            got = parse_caption_attributes(cap)
            assert got['shape'] == r['shape'] and all(got[k] in (None, r[k]) for k in ['colour', 'size', 'position'])


def test_classes_balanced_and_mention_rates(shapes_set):
    rows = read_attributes(shapes_set)
    counts = Counter(r['class'] for r in rows[:100])
    assert len(counts) == 100                  # every class once in each round of 100 images
    caps = [parse_caption_attributes(c) for r in rows for c in r['captions']]
    assert all(c['shape'] for c in caps)
    assert 0.85 < np.mean([c['colour'] is not None for c in caps]) < 0.97
    assert 0.3 < np.mean([c['size'] is not None for c in caps]) < 0.7
    assert 0.4 < np.mean([c['position'] is not None for c in caps]) < 0.75


# ---------------------------------------------------------------- COCO layout

def test_coco_layout(multi_set):
    ann = multi_set / 'annotations'
    all_ids, cat_ids = set(), None
    for sp in ('train', 'val'):
        caps, inst = json.loads((ann / f'captions_{sp}2014.json').read_text()), json.loads((ann / f'instances_{sp}2014.json').read_text())
        assert {'images', 'annotations', 'info', 'licenses'} <= set(caps) and 'categories' in inst
        assert caps['images'] == inst['images']
        ids = {im['id'] for im in caps['images']}
        assert not ids & all_ids; all_ids |= ids
        for im in caps['images']:
            assert set(im) >= {'id', 'file_name', 'width', 'height'}
            assert im['file_name'] == f"COCO_{sp}2014_{im['id']:012d}.jpg"
            img = Image.open(multi_set / f'{sp}2014' / im['file_name'])
            assert img.format == 'JPEG' and img.size == (im['width'], im['height']) == (64, 64)
        per_img = Counter(a['image_id'] for a in caps['annotations'])
        assert set(per_img) == ids and set(per_img.values()) == {5}
        assert all(isinstance(a['caption'], str) and a['caption'] for a in caps['annotations'])
        cats = {c['id']: c['name'] for c in inst['categories']}
        assert sorted(cats.values()) == sorted(SHAPES) and all(set(c) == {'id', 'name', 'supercategory'} for c in inst['categories'])
        assert sorted(cats) != list(range(1, len(cats) + 1))             # non-contiguous ids, like COCO
        cat_ids = cat_ids or cats
        assert cats == cat_ids
        for a in inst['annotations']:
            assert a['image_id'] in ids and a['category_id'] in cats and a['iscrowd'] == 0 and a['segmentation'] == []
            x, y, w, h = a['bbox']
            assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 64 and 0 < a['area'] <= w * h
        ann_ids = [a['id'] for a in inst['annotations']]
        assert len(set(ann_ids)) == len(ann_ids)
    assert all_ids == set(range(1, 151))
    assert len(list((multi_set / 'train2014').glob('*.jpg'))) + len(list((multi_set / 'val2014').glob('*.jpg'))) == 150


def test_multi_attributes_agree_with_coco(multi_set):
    rows = {r['id']: r for r in read_attributes(multi_set)}
    inst = {sp: json.loads((multi_set / 'annotations' / f'instances_{sp}2014.json').read_text()) for sp in ('train', 'val')}
    for sp, d in inst.items():
        names = {c['id']: c['name'] for c in d['categories']}
        by_img = {}
        for a in d['annotations']: by_img.setdefault(a['image_id'], []).append((names[a['category_id']], a['bbox']))
        for im in d['images']:
            r = rows[im['id']]
            assert r['split'] == sp and r['image'] == f"{sp}2014/{im['file_name']}"
            assert sorted(by_img[im['id']]) == sorted((o['shape'], o['bbox']) for o in r['objects'])
            assert r['labels'] == sorted({o['shape'] for o in r['objects']})
    ks = Counter(len(r['objects']) for r in rows.values())
    assert set(ks) == {1, 2, 3}
    for r in rows.values():
        assert len({o['position'] for o in r['objects']}) == len(r['objects'])          # one object per grid cell
        assert len({(o['shape'], o['colour']) for o in r['objects']}) == len(r['objects'])


def test_multi_captions_true(multi_set):
    def matches(p, o): return all(p[k] is None or p[k] == o[k] for k in ['shape', 'colour', 'size', 'position'])
    for r in read_attributes(multi_set):
        for cap in r['captions']:
            sc = parse_caption_scene(cap)
            assert 1 <= len(sc['objects']) <= len(r['objects']), cap
            assert all(o['shape'] and o['colour'] for o in sc['objects']), cap
            found = [[o for o in r['objects'] if matches(p, o)] for p in sc['objects']]
            assert all(len(f) == 1 for f in found), cap
            for i, rel, j in sc['relations']: assert rel in true_relations(found[i][0], found[j][0]), cap
            assert sc['background'] in (None, r['background'])


# ---------------------------------------------------------------- splits

@pytest.mark.parametrize('maker', [make_shapes, make_shapes_multi])
def test_composition_split(tmp_path, maker):
    root = maker(tmp_path / 'c', n=300, size=32, seed=5, split='composition')
    meta, rows = read_shapes_meta(root), read_attributes(root)
    held = {tuple(p) for p in meta['heldout']}
    assert held == set(heldout_compositions(5)) and len(held) == len(SHAPES)
    assert {s for s, _ in held} == set(SHAPES) and {c for _, c in held} == set(COLOURS)
    objs = lambda r: r.get('objects') or [r]
    train = [r for r in rows if r['split'] == 'train']
    test = [r for r in rows if r['split'] != 'train']
    train_pairs = {(o['shape'], o['colour']) for r in train for o in objs(r)}
    assert not train_pairs & held
    assert {s for s, _ in train_pairs} == set(SHAPES) and {c for _, c in train_pairs} == set(COLOURS)
    assert {(o['shape'], o['colour']) for r in test for o in objs(r)} & held      # held-out pairs are tested
    assert all(r['heldout'] == any((o['shape'], o['colour']) in held for o in objs(r)) for r in rows)
    assert any(not r['heldout'] for r in test)         # seen compositions in test too, for comparison
    assert heldout_compositions(5) != heldout_compositions(6)
    if maker is make_shapes:
        split = {int(i): int(s) for i, s in _lines(root / 'CUB_200_2011' / 'train_test_split.txt')}
        assert all(split[r['id']] == (r['split'] == 'train') for r in rows)


def test_image_split_fraction(tmp_path):
    rows = read_attributes(make_shapes_multi(tmp_path / 'm', n=100, size=32, test_frac=0.3))
    assert Counter(r['split'] for r in rows) == {'train': 70, 'val': 30}
    assert not any(r['heldout'] for r in rows)


# ---------------------------------------------------------------- captions and parser

def test_template_coverage(shapes_set, multi_set):
    assert len(TEMPLATES) >= 20 and len(set(TEMPLATES)) == len(TEMPLATES)
    assert all('shape' in template_fields(t) for t in TEMPLATES)
    used = {t for r in read_attributes(shapes_set) for t in r['templates']}
    assert used == set(range(len(TEMPLATES)))
    used = {t for r in read_attributes(multi_set) for t in r['templates']}
    assert used == set(range(len(MULTI_TEMPLATES)))
    # synonyms are really used
    caps = ' '.join(c for r in read_attributes(shapes_set) for c in r['captions'])
    assert sum(w in caps for w in ['round disc', 'disk', 'big', 'huge', 'little', 'tiny', 'upper', 'lower', 'gray']) >= 6


def _random_attrs(rng):
    return dict(shape=str(rng.choice(SHAPES)), colour=str(rng.choice(COLOURS)), size=str(rng.choice(SIZES)),
                position=str(rng.choice(POSITIONS)), background=str(rng.choice(BACKGROUNDS)))


@pytest.mark.parametrize('ti', range(len(TEMPLATES)))
def test_parser_round_trip_single(ti):
    t, rng = TEMPLATES[ti], np.random.default_rng(ti)
    key = {'shape': 'shape', 'colour': 'colour', 'size': 'size', 'position': 'pos'}
    for _ in range(200):
        a = _random_attrs(rng)
        cap = fill_template(t, a, rng)
        assert parse_caption_attributes(cap) == {k: (a[k] if f in template_fields(t) else None) for k, f in key.items()}, cap
        assert parse_caption_scene(cap)['background'] == (a['background'] if 'bg' in template_fields(t) else None), cap


@pytest.mark.parametrize('ti', range(len(MULTI_TEMPLATES)))
def test_parser_round_trip_multi(ti):
    t, counts = MULTI_TEMPLATES[ti]
    rng = np.random.default_rng(100 + ti)
    f = template_fields(t)
    for _ in range(200):
        k = int(rng.choice(counts))
        cells = rng.choice(len(POSITIONS), k, replace=False)
        objs = [dict(_random_attrs(rng), position=POSITIONS[c]) for c in cells]
        cap = fill_multi_template(t, objs, 'dots', rng)
        sc = parse_caption_scene(cap)
        n_named = max(int(x[2]) for x in f if x.startswith('np'))
        assert len(sc['objects']) == n_named, cap
        for j, (p, o) in enumerate(zip(sc['objects'], objs)):
            assert p['shape'] == o['shape'] and p['colour'] == o['colour'] and p['size'] in (None, o['size']), cap
            assert p['position'] == (o['position'] if f'pos{j + 1}' in f else None), cap
        want = [(int(x[3]) - 1, int(x[4]) - 1) for x in f if x.startswith('rel')]
        assert [(i, j) for i, _, j in sc['relations']] == want, cap
        for i, rel, j in sc['relations']: assert rel in true_relations(objs[i], objs[j]), cap
        assert sc['background'] == ('dots' if 'bg' in f else None), cap
        assert parse_caption_attributes(cap)['shape'] == objs[0]['shape']


def test_make_captions_api():
    a = dict(shape='heart', colour='pink', size='small', position='bottom', background='gradient')
    caps, ids = make_captions(a, 10, 3, return_ids=True)
    assert len(set(ids)) == 10 and caps == make_captions(a, 10, 3)
    assert len(make_captions(a, 50, 0)) == 50
    scene = [dict(shape='cross', colour='green', size='large', position='left'),
             dict(shape='ring', colour='brown', size='small', position='right')]
    assert len(make_captions_multi(scene, 'light', 7, 0)) == 7
    with pytest.raises(T2IError): make_captions_multi(scene * 2, 'light', 2, 0)
    assert parse_caption_attributes('') == {'shape': None, 'colour': None, 'size': None, 'position': None}


# ---------------------------------------------------------------- drawing

@pytest.mark.parametrize('bg', BACKGROUNDS)
def test_colours_readable_on_every_background(bg):
    "The mean colour inside each object is close to its nominal colour and far from the other colours."
    rgb = np.array([COLOUR_RGB[c] for c in COLOURS], dtype=float)
    for i, c in enumerate(COLOURS):
        objs = [dict(shape='square', colour=c, size='large', position='center')]
        img, (g,) = render_scene(objs, bg, 64, np.random.default_rng(i))
        x, y, w, h = map(int, g['bbox'])
        patch = np.asarray(img, dtype=float)[y + h // 4: y + 3 * h // 4, x + w // 4: x + 3 * w // 4].reshape(-1, 3).mean(0)
        assert np.argmin(((rgb - patch) ** 2).sum(1)) == i, (c, bg, patch)


def test_every_shape_renders_distinctly():
    masks = {s: shape_mask(s, (32, 32), 44, 0, 64)[0] for s in SHAPES}
    assert all(m.shape == (64, 64) for m in masks.values())
    for a in SHAPES:
        for b in SHAPES:
            if a < b:
                iou = np.minimum(masks[a], masks[b]).sum() / np.maximum(masks[a], masks[b]).sum()
                assert iou < 0.85, (a, b, iou)


def test_render_sizes_and_helpers():
    for s in (32, 97, 256): assert render_shape('star', 'yellow', img_size=s).size == (s, s)
    with pytest.raises(T2IError, match='unknown colour'): render_shape('star', 'magenta')
    with pytest.raises(T2IError, match='unknown position'): render_shape('star', 'red', position='north')


# ---------------------------------------------------------------- bad input and re-use

def test_bad_input(tmp_path):
    (tmp_path / 'mine').mkdir(); (tmp_path / 'mine' / 'a.txt').write_text('x')
    for call, msg in [(lambda: make_shapes(tmp_path / 'mine', n=5), 'not empty'),
                      (lambda: make_shapes_multi(tmp_path / 'mine', n=5), 'not empty'),
                      (lambda: make_shapes(tmp_path / 'o', size=31), '32 to 256'),
                      (lambda: make_shapes(tmp_path / 'o', size=257), '32 to 256'),
                      (lambda: make_shapes(tmp_path / 'o', n=0), 'positive'),
                      (lambda: make_shapes(tmp_path / 'o', test_frac=1.0), 'test_frac'),
                      (lambda: make_shapes(tmp_path / 'o', split='random'), 'split'),
                      (lambda: make_shapes(tmp_path / 'mine' / 'a.txt', n=5), 'is a file'),
                      (lambda: make_shapes_multi(tmp_path / 'o', max_objects=4), 'max_objects')]:
        with pytest.raises(T2IError, match=msg) as e: call()
        assert '\n' not in str(e.value)
    assert not (tmp_path / 'o').exists()
    make_shapes(tmp_path / 'mine', n=5, size=32, overwrite=True)
    assert (tmp_path / 'mine' / 'a.txt').read_text() == 'x'


def test_reuse_and_replace(tmp_path):
    root = make_shapes(tmp_path / 's', n=50, size=32)
    stamp = (root / 'shapes_meta.json').stat().st_mtime_ns
    make_shapes(root, n=50, size=32)                      # same set: found, not rewritten
    assert (root / 'shapes_meta.json').stat().st_mtime_ns == stamp
    make_shapes(root, n=20, size=32)                      # other parameters: replaced, no stale files left
    assert len(list((root / 'CUB_200_2011' / 'images').rglob('*.jpg'))) == 20
    assert len(list((root / 'text_c10').rglob('*.txt'))) == 20
    make_shapes_multi(root, n=10, size=32)                # a shapes set may be replaced by the other kind
    assert not (root / 'CUB_200_2011').exists() and read_shapes_meta(root)['kind'] == 'shapes-multi'
    assert len(read_attributes(root)) == 10


def test_small_n_and_extreme_sizes(tmp_path):
    rows = read_attributes(make_shapes(tmp_path / 'a', n=40, size=256, captions_per_image=3))
    assert len(rows) == 40 and all(len(r['captions']) == 3 for r in rows)
    assert Image.open(tmp_path / 'a' / rows[0]['image']).size == (256, 256)
    rows = read_attributes(make_shapes_multi(tmp_path / 'b', n=7, size=32, max_objects=1))
    assert all(len(r['objects']) == 1 for r in rows)


def test_speed(tmp_path):
    "Loose floor (CPU time, so other load on the machine does not matter): the notebook reports the real figure."
    t = time.process_time()
    make_shapes(tmp_path / 's', n=200)
    assert 200 / (time.process_time() - t) > 100
