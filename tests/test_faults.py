"""Fault injection: bad data, bad values, damaged checkpoints, signals, two writers, a full or unwritable disk.

Every case asserts the exit code, that the user sees exactly one line (no traceback), and that nothing was lost:
the last checkpoint still loads and the run still resumes. Commands run in this process (fast) except where the
fault needs a real process (signals, kill -9, a second writer).
"""
import contextlib, errno, io, json, os, pickle, shutil, signal, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from t2i_nb.core import FolderLock
from t2i_nb.engine import load_checkpoint
from t2i_nb.data import t2i_data, load_dataset, read_image
from t2i_nb.train import t2i_train, TrainConfig
from t2i_nb.metrics import t2i_eval
from t2i_nb.generate import t2i_generate

TINY = dict(bs=8, img_size=32, nf=8, model='dte', scl='none', text_init='scratch', quiet=True)   # no encoders to pre-train


def cli(fn, *a, **kw):
    "`(exit code, stderr lines)` of console command `fn` run in this process."
    err = io.StringIO()
    with contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try: fn(*a, **kw); code = 0
        except SystemExit as e: code = e.code
    return code, [l for l in err.getvalue().splitlines() if l.strip()]


def one_error(fn, *a, code=2, **kw) -> str:
    "Run `fn`; assert it failed with `code` and exactly one line `error: ...`; that line."
    c, lines = cli(fn, *a, **kw)
    assert c == code and len(lines) == 1 and lines[0].startswith('error: '), (c, lines)
    assert 'Traceback' not in lines[0]
    return lines[0]


@pytest.fixture(scope='module')
def root(tiny_shapes): return tiny_shapes[0]


@pytest.fixture(scope='module')
def done_run(root, tmp_path_factory):
    "A finished 2-step run (checkpoint at each step) that tests copy before they damage it."
    run = tmp_path_factory.mktemp('done')/'run'
    assert cli(t2i_train, out=str(run), root=str(root), steps=2, ckpt_every=1, **TINY)[0] == 0
    return run


@pytest.fixture
def run(done_run, tmp_path):
    dst = tmp_path/'run'
    shutil.copytree(done_run, dst)
    return dst


def still_good(run, step=2):
    "Nothing lost: the checkpoint loads, at `step`, and the run resumes by one more step."
    assert load_checkpoint(run)['step'] == step
    assert cli(t2i_train, resume=str(run), steps=step + 1, quiet=True)[0] == 0
    assert load_checkpoint(run)['step'] == step + 1


# ---- bad data: images -------------------------------------------------------------------------------------------

def test_16bit_png_is_not_white(tmp_path):
    Image.fromarray(np.full((8, 8), 20000, np.uint16)).save(tmp_path/'a.png')
    assert read_image(tmp_path/'a.png').getpixel((0, 0)) == (78, 78, 78)      # 20000 / 65535 * 255, not 255


def test_palette_with_transparency_lies_on_white(tmp_path):
    im = Image.new('P', (2, 2), 0); im.putpalette([0, 0, 0, 255, 0, 0]); im.info['transparency'] = 0
    im.save(tmp_path/'p.png', transparency=0)
    assert read_image(tmp_path/'p.png').getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg_reads_as_rgb(tmp_path):
    Image.new('CMYK', (16, 16), (0, 255, 255, 0)).save(tmp_path/'c.jpg')
    r, g, b = read_image(tmp_path/'c.jpg').getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_greyscale_with_alpha(tmp_path):
    Image.new('LA', (4, 4), (0, 0)).save(tmp_path/'la.png')
    assert read_image(tmp_path/'la.png').getpixel((0, 0)) == (255, 255, 255)


def _cub_copy(root, tmp_path):
    d = tmp_path/'shapes'
    shutil.copytree(root, d, ignore=shutil.ignore_patterns('.t2i_cache'))
    return d


def test_corrupt_images_skipped_with_a_warning_naming_one(root, tmp_path):
    d = _cub_copy(root, tmp_path)
    imgs = sorted((d/'CUB_200_2011'/'images').rglob('*.jpg'))
    imgs[0].write_bytes(b'not an image at all'); imgs[1].write_bytes(imgs[1].read_bytes()[:60])   # garbage, and a truncated file
    with warnings.catch_warnings(record=True) as w, contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter('always')
        t2i_train(out=str(tmp_path/'r'), root=str(d), steps=1, **TINY)
    said = ' '.join(str(x.message) for x in w)
    assert 'corrupt or unreadable image(s) skipped (first:' in said and '.jpg' in said, said
    assert load_checkpoint(tmp_path/'r')['step'] == 1


def test_all_images_corrupt_is_one_line(root, tmp_path):
    d = _cub_copy(root, tmp_path)
    for bad in (d/'CUB_200_2011'/'images').rglob('*.jpg'): bad.write_bytes(b'x')
    assert 'no usable image' in one_error(t2i_train, out=str(tmp_path/'r'), root=str(d), steps=1, **TINY)
    assert not (tmp_path/'r'/'checkpoint.pt').exists()


# ---- bad data: metadata of the published formats ----------------------------------------------------------------

@pytest.mark.parametrize('name, line, want', [
    ('images.txt', 'x 001.a/b.png', 'line 1: field 1 must be an integer'),
    ('images.txt', '7', 'line 1: expected 2 fields, got 1'),
    ('image_class_labels.txt', '1 999', 'image 1 has class 999'),
    ('train_test_split.txt', '1 2', 'line 1: field 2 must be 0 or 1'),
    ('classes.txt', 'one red', 'line 1: field 1 must be an integer')])
def test_cub_tables_name_file_and_line(root, tmp_path, name, line, want):
    d = _cub_copy(root, tmp_path)
    f = d/'CUB_200_2011'/name
    rest = f.read_text().splitlines()[1:]
    f.write_text('\n'.join([line] + rest) + '\n')
    msg = one_error(t2i_data, dataset='shapes', root=str(d))
    assert name in msg and want in msg, msg


def test_cub_table_not_text(root, tmp_path):
    d = _cub_copy(root, tmp_path)
    (d/'CUB_200_2011'/'images.txt').write_bytes(b'\xff\xfe\x00binary')
    assert 'images.txt is not a text file' in one_error(t2i_data, dataset='shapes', root=str(d))


def test_cub_image_without_class_line(root, tmp_path):
    d = _cub_copy(root, tmp_path)
    f = d/'CUB_200_2011'/'image_class_labels.txt'
    f.write_text('\n'.join(f.read_text().splitlines()[1:]) + '\n')
    assert 'has no class for image 1' in one_error(t2i_data, dataset='shapes', root=str(d))


@pytest.fixture(scope='module')
def multi_root(tmp_path_factory):
    from t2i_nb.shapes import make_shapes_multi
    return make_shapes_multi(tmp_path_factory.mktemp('multi')/'m', n=20, size=32, seed=0)


@pytest.mark.parametrize('which, edit, want', [
    ('captions', lambda d: d['annotations'][0].update(caption=5), 'annotations[0]: "caption" must be a string, got 5'),
    ('captions', lambda d: d['annotations'][1].pop('image_id'), 'annotations[1] has no "image_id"'),
    ('captions', lambda d: d['images'][0].pop('file_name'), 'images[0] has no "file_name"'),
    ('captions', lambda d: d.pop('images'), 'has no "images" list'),
    ('instances', lambda d: d['annotations'][0].update(category_id=12345), 'category_id 12345, which is not in its categories'),
    ('instances', lambda d: d['categories'][0].update(id='7'), 'categories[0]: "id" must be an integer')])
def test_coco_annotations_name_file_and_record(multi_root, tmp_path, which, edit, want):
    d = tmp_path/'m'
    shutil.copytree(multi_root, d, ignore=shutil.ignore_patterns('.t2i_cache'))
    f = d/'annotations'/f'{which}_train2014.json'
    data = json.loads(f.read_text()); edit(data); f.write_text(json.dumps(data))
    msg = one_error(t2i_data, dataset='shapes-multi', root=str(d))
    assert f.name in msg and want in msg, msg


def test_coco_annotations_not_json(multi_root, tmp_path):
    d = tmp_path/'m'
    shutil.copytree(multi_root, d, ignore=shutil.ignore_patterns('.t2i_cache'))
    (d/'annotations'/'captions_train2014.json').write_text('{"images": [')
    assert 'is not valid JSON' in one_error(t2i_data, dataset='shapes-multi', root=str(d))


def test_coco_annotations_a_list(multi_root, tmp_path):
    d = tmp_path/'m'
    shutil.copytree(multi_root, d, ignore=shutil.ignore_patterns('.t2i_cache'))
    (d/'annotations'/'instances_train2014.json').write_text('[1, 2]')
    assert 'must hold a JSON object with "categories"' in one_error(t2i_data, dataset='shapes-multi', root=str(d))


def test_flowers_mat_without_labels(tmp_path):
    import scipy.io
    d = tmp_path/'flowers'
    for sub in ('jpg', 'text_c10'): (d/sub).mkdir(parents=True)
    scipy.io.savemat(d/'imagelabels.mat', {'lbls': np.ones((1, 3))})
    scipy.io.savemat(d/'setid.mat', {'trnid': np.array([[1, 2]]), 'valid': np.array([[3]]), 'tstid': np.array([[3]])})
    assert "has no variable 'labels'" in one_error(t2i_data, dataset='flowers', root=str(d))
    (d/'imagelabels.mat').write_bytes(b'garbage')
    assert 'as a MATLAB file' in one_error(t2i_data, dataset='flowers', root=str(d))


def test_missing_data_root(tmp_path):
    assert 'not found' in one_error(t2i_data, dataset='cub', root=str(tmp_path/'nothing'))


# ---- bad values --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('kw', [dict(bs=0), dict(bs=-2), dict(steps=-5), dict(img_size=48), dict(nf=0), dict(lr_g=-1.0),
                                dict(lr_d=float('nan')), dict(workers=-1), dict(ckpt_every=-1), dict(dataset='imagenet'),
                                dict(n_critic=0), dict(text='bert'), dict(scl='triplet'), dict(backbone='vqgan'),
                                dict(precision='fp8'), dict(device='tpu')])
def test_bad_option_values(root, tmp_path, kw):
    one_error(t2i_train, out=str(tmp_path/'r'), root=str(root), steps=kw.pop('steps', 1), **{**TINY, **kw})
    assert not (tmp_path/'r'/'checkpoint.pt').exists()


@pytest.mark.parametrize('edit, want', [(lambda c: c['net']['gan'].update(nf='8'), 'nf must be an integer, got "8"'),
                                        (lambda c: c.update(lr_g='fast'), 'lr_g must be a number'),
                                        (lambda c: c.update(bs=None), 'bs must be an integer, got null'),
                                        (lambda c: c.update(learning_rate=1), "unknown key 'learning_rate'")])
def test_edited_config_json(run, edit, want):
    cfg = json.loads((run/'config.json').read_text()); edit(cfg)
    (run/'config.json').write_text(json.dumps(cfg))
    assert want in one_error(t2i_train, resume=str(run), steps=3, quiet=True)
    assert want in one_error(t2i_eval, str(run), n_samples=8, no_oracle=True, quiet=True)
    assert load_checkpoint(run)['step'] == 2


def test_config_json_not_json(run):
    (run/'config.json').write_text('{"steps": ')
    assert 'is not a valid configuration file' in one_error(t2i_train, resume=str(run), steps=3, quiet=True)


# ---- checkpoints -------------------------------------------------------------------------------------------------

def test_zero_byte_checkpoint(run, tmp_path):
    (run/'checkpoint.pt').write_bytes(b'')
    for fn, a, kw in ((t2i_train, (), dict(resume=str(run), steps=3, quiet=True)), (t2i_eval, (str(run),), dict(n_samples=8, quiet=True)),
                      (t2i_generate, (['a red circle'],), dict(run=str(run), out=str(tmp_path/'g.png')))):
        assert 'is empty (0 bytes)' in one_error(fn, *a, **kw)


def test_truncated_checkpoint(run):
    ck = run/'checkpoint.pt'
    ck.write_bytes(ck.read_bytes()[:1000])
    assert 'is not a readable t2i_nb checkpoint' in one_error(t2i_train, resume=str(run), steps=3, quiet=True)


class _Evil:
    def __reduce__(self): return (os.system, (f'touch {_Evil.marker}',))


def test_checkpoint_with_code_is_never_run(run):
    _Evil.marker = run/'pwned'
    with open(run/'checkpoint.pt', 'wb') as f: pickle.dump({'format': 'x', 'evil': _Evil()}, f)
    assert 'is not a readable t2i_nb checkpoint' in one_error(t2i_train, resume=str(run), steps=3, quiet=True)
    assert not (run/'pwned').exists()


def test_checkpoint_of_another_configuration(run, root, tmp_path):
    other = tmp_path/'other'
    assert cli(t2i_train, out=str(other), root=str(root), steps=1, **{**TINY, 'nf': 16})[0] == 0
    shutil.copy(other/'checkpoint.pt', run/'checkpoint.pt')
    assert 'checkpoint was trained with gan.nf=16' in one_error(t2i_train, resume=str(run), steps=3, quiet=True)
    msg = one_error(t2i_generate, ['a red circle'], run=str(run), out=str(tmp_path/'g.png'))
    assert 'comes from another configuration' in msg, msg


def test_finished_run_resumes_as_a_no_op(run, capsys):
    for steps in (2, 1):       # at, and below, the step reached
        code, lines = cli(t2i_train, resume=str(run), steps=steps)
        assert code == 0 and any('nothing to do' in l for l in capsys.readouterr().out.splitlines()), lines
    assert load_checkpoint(run)['step'] == 2


def test_resume_with_lower_learning_rate_takes_effect(run):
    assert cli(t2i_train, resume=str(run), steps=3, lr_g=1e-6, lr_d=2e-6, quiet=True)[0] == 0
    ck = load_checkpoint(run)
    assert [g['lr'] for g in ck['gan_trainer']['opt_g']['param_groups']] == [1e-6]
    assert [g['lr'] for g in ck['gan_trainer']['opt_d']['param_groups']] == [2e-6]
    cfg = json.loads((run/'config.json').read_text())
    assert (cfg['lr_g'], cfg['lr_d']) == (1e-6, 2e-6)


@pytest.mark.parametrize('kw, want', [(dict(bs=4), 'trained with bs=8'), (dict(preset='galip-cpu'), 'was trained from preset cpu-quick'),
                                      (dict(n_critic=2), 'trained with n_critic=1'), (dict(seed=5), 'trained with seed=0'),
                                      (dict(dataset='shapes-multi'), 'trained with dataset=')])
def test_resume_refuses_what_may_not_change(run, kw, want):
    assert want in one_error(t2i_train, resume=str(run), steps=3, quiet=True, **kw)
    assert load_checkpoint(run)['step'] == 2


def test_disk_full_while_saving_keeps_the_last_checkpoint(run, monkeypatch):
    def full(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device', str(run/'checkpoint.pt'))
    monkeypatch.setattr(torch, 'save', full)
    assert 'the disk is full' in one_error(t2i_train, resume=str(run), steps=3, ckpt_every=1, quiet=True)
    monkeypatch.undo()
    assert not list(run.glob('.*.tmp'))
    still_good(run)


# ---- the run folder and other outputs ---------------------------------------------------------------------------

def test_out_is_a_file(root, tmp_path):
    (tmp_path/'f').write_text('x')
    assert 'is a file, not a folder' in one_error(t2i_train, out=str(tmp_path/'f'), root=str(root), steps=1, **TINY)
    assert (tmp_path/'f').read_text() == 'x'


def test_out_below_a_file(root, tmp_path):
    (tmp_path/'f').write_text('x')
    assert 'which is a file' in one_error(t2i_train, out=str(tmp_path/'f'/'run'), root=str(root), steps=1, **TINY)


def test_out_holds_other_files(root, tmp_path):
    (tmp_path/'thesis').mkdir(); (tmp_path/'thesis'/'chapter1.tex').write_text('keep me')
    assert 'not a t2i_train run' in one_error(t2i_train, out=str(tmp_path/'thesis'), root=str(root), steps=1, **TINY)
    assert (tmp_path/'thesis'/'chapter1.tex').read_text() == 'keep me'


def test_out_not_writable_fails_before_any_work(root, tmp_path, monkeypatch):
    import tempfile
    def denied(*a, **k): raise PermissionError(errno.EACCES, 'Permission denied')
    monkeypatch.setattr(tempfile, 'TemporaryFile', denied)     # root ignores permission bits, so the OS error is injected
    t0 = time.time()
    assert 'cannot write in' in one_error(t2i_train, out=str(tmp_path/'ro'), root=str(root), steps=1, **TINY)
    assert time.time() - t0 < 10


def test_existing_run_is_not_overwritten(run, root):
    assert 'already holds a run' in one_error(t2i_train, out=str(run), root=str(root), steps=1, **TINY)
    still_good(run)


def test_generate_out_is_a_folder(run, tmp_path):
    assert 'is a folder: give a file name' in one_error(t2i_generate, ['a red circle'], run=str(run), out=str(tmp_path))


def test_generate_out_below_a_file(run, tmp_path):
    (tmp_path/'f').write_text('x')
    assert 'which is a file' in one_error(t2i_generate, ['a red circle'], run=str(run), out=str(tmp_path/'f'/'g.png'))


def test_generate_empty_caption(run, tmp_path):
    one_error(t2i_generate, ['   '], run=str(run), out=str(tmp_path/'g.png'))


def test_written_files_follow_the_umask(run):
    m = os.umask(0o022); os.umask(m)
    for name in ('checkpoint.pt', 'config.json', 'vocab.json'):
        assert (run/name).stat().st_mode & 0o777 == 0o666 & ~m, name


# ---- concurrency, signals and kill -9 (real processes) -------------------------------------------------------------

def _cmd(*args): return [sys.executable, '-m', 't2i_nb.train', *map(str, args)]
def _env(): return {**os.environ, 'OMP_NUM_THREADS': '1', 'T2I_DEVICE': 'cpu', 'PYTHONUNBUFFERED': '1'}


def test_second_writer_meets_the_lock(root, tmp_path):
    run = tmp_path/'run'
    with FolderLock(run, 't2i_train'):            # a first writer (this process) holds the folder
        msg = one_error(t2i_train, out=str(run), root=str(root), steps=1, **TINY)
        assert f'is in use by t2i_train (pid {os.getpid()}' in msg
    assert cli(t2i_train, out=str(run), root=str(root), steps=1, **TINY)[0] == 0   # released: the folder is free


def test_kill_9_leaves_no_stale_lock_and_resumes(root, tmp_path):
    run = tmp_path/'run'
    p = subprocess.Popen(_cmd('--out', run, '--root', root, '--steps', 500, '--ckpt_every', 2, '--bs', 8, '--img_size', 32, '--nf', 8,
                              '--model', 'dte', '--scl', 'none', '--text_init', 'scratch', '--quiet'),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    t0 = time.time()
    while not (run/'checkpoint.pt').exists():
        assert p.poll() is None and time.time() - t0 < 150, p.communicate()
        time.sleep(0.2)
    msg = one_error(t2i_train, resume=str(run), steps=600, quiet=True)   # while it runs: the lock names it
    assert f'is in use by t2i_train (pid {p.pid}' in msg, msg
    (run/'.checkpoint.pt.killed.tmp').write_bytes(b'half')              # what a kill -9 mid-write leaves
    p.send_signal(signal.SIGKILL); p.wait(timeout=60)
    step = load_checkpoint(run)['step']
    assert cli(t2i_train, resume=str(run), steps=step + 1, quiet=True)[0] == 0
    assert load_checkpoint(run)['step'] == step + 1 and not list(run.glob('.*.tmp'))


def test_sigterm_before_training_exits_143(root, tmp_path):
    p = subprocess.Popen(_cmd('--out', tmp_path/'run', '--root', root, '--steps', 5, '--bs', 8, '--img_size', 32, '--nf', 8,
                              '--model', 'dte', '--scl', 'none', '--text_init', 'scratch', '--quiet'),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    t0 = time.time()
    while not (tmp_path/'run'/'.lock').exists():       # the command is running (its folder is locked), training not started
        assert p.poll() is None and time.time() - t0 < 150, p.communicate()
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    lines = [l for l in err.splitlines() if l.strip()]
    assert p.returncode == 143 and 'Traceback' not in err and len(lines) <= 2, err


def test_pretrain_out_checked_before_the_data_work(tmp_path):
    from t2i_nb.pretrain import t2i_pretrain
    (tmp_path/'f').write_text('x')
    t0 = time.time()
    assert 'is a file, not a folder' in one_error(t2i_pretrain, dataset='shapes', root=str(tmp_path/'nodata'), out=str(tmp_path/'f'))
    with FolderLock(tmp_path/'enc', 't2i_pretrain'):
        assert 'is in use by t2i_pretrain' in one_error(t2i_pretrain, dataset='shapes', root=str(tmp_path/'nodata'), out=str(tmp_path/'enc'))
    assert time.time() - t0 < 10


# ---- bugs and --debug ---------------------------------------------------------------------------------------------

def test_a_bug_is_one_line_pointing_to_debug(root, tmp_path, monkeypatch):
    import t2i_nb.train as tr
    def broken(*a, **k): raise ZeroDivisionError('division by zero')
    monkeypatch.setattr(tr, 'build_system', broken)
    msg = one_error(t2i_train, out=str(tmp_path/'r'), root=str(root), steps=1, code=1, **TINY)
    assert 'internal error (ZeroDivisionError: division by zero)' in msg and '--debug' in msg
    with pytest.raises(ZeroDivisionError): t2i_train(out=str(tmp_path/'r2'), root=str(root), steps=1, debug=True, **TINY)
    monkeypatch.setenv('T2I_DEBUG', '1')
    with pytest.raises(ZeroDivisionError): t2i_train(out=str(tmp_path/'r3'), root=str(root), steps=1, **TINY)


def test_debug_flag_on_the_command_line(tmp_path):
    r = subprocess.run([sys.executable, '-c', 'from t2i_nb.cli import t2i_data; t2i_data()', '--make', 'nope', '--debug'],
                       capture_output=True, text=True, env=_env())
    assert r.returncode == 1 and 'Traceback' in r.stderr and "--make 'nope'" in r.stderr


def test_corrupt_vocab_json(run, tmp_path):
    (run/'vocab.json').write_text('{"itos": [1, 2')
    assert 'vocab' in one_error(t2i_generate, ['a red circle'], run=str(run), out=str(tmp_path/'g.png'))
    assert 'vocab' in one_error(t2i_train, resume=str(run), steps=3, quiet=True)


def test_missing_config_json(run):
    (run/'config.json').unlink()
    assert 'not a t2i_train run folder (no config.json)' in one_error(t2i_train, resume=str(run), steps=3, quiet=True)
