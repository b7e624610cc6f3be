"End-to-end tests of the `t2i_info` console script (installed by `pip install -e .`)."
import json, subprocess, sys, shutil
import pytest

def run(*args):
    exe = shutil.which('t2i_info')
    cmd = [exe, *args] if exe else [sys.executable, '-c', 'from t2i_nb.core import t2i_info; t2i_info()', *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

def test_info_json():
    r = run('--json_out', '--no_compile', '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    import torch, torchvision, t2i_nb
    assert info['t2i_nb'] == t2i_nb.__version__
    assert info['torch'] == torch.__version__ and info['torchvision'] == torchvision.__version__
    assert info['device'] == 'cpu' and info['bf16'] == 'yes' and info['torch.compile'] == 'not checked'

def test_info_table_and_help():
    r = run('--no_compile')
    assert r.returncode == 0 and 'torchvision' in r.stdout and 'bf16' in r.stdout
    assert run('--help').returncode == 0

@pytest.mark.parametrize('dev, msg', [('tpu', 'unknown device'), ('cuda:7', 'CUDA')])
def test_info_bad_device_is_one_line(dev, msg):
    import torch
    if dev.startswith('cuda') and torch.cuda.device_count() > 7: pytest.skip('has 8 GPUs')
    r = run('--device', dev, '--no_compile')
    assert r.returncode == 2
    assert r.stderr.strip().count('\n') == 0 and msg in r.stderr and 'Traceback' not in r.stderr

def test_importing_the_package_prints_no_warning():
    "Importing every module (what each t2i_* command does first) leaves stderr empty: fastai's torch.jit.script deprecation is silenced."
    mods = 'core shapes data encoders losses pretrain models gan train metrics generate bench ablation'.split()
    code = '; '.join(f'import t2i_nb.{m}' for m in mods)
    r = subprocess.run([sys.executable, '-W', 'default', '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'jit.script' not in r.stderr, r.stderr
