"""A few hundred training steps of the cub-256 preset's networks (DF-GAN at 256 px, nf 32, batch 32, DTE text side) on random
batches, with the engine's precision on the device: images/s and whether every loss stayed finite. Part of
tools/gpu_check.sh; `--smoke` runs the same code at 32 px on the CPU."""
import argparse, json, math, sys, time
from pathlib import Path
import torch
from t2i_nb.core import default_device
from t2i_nb.engine import AMP, EMA, GANTrainer, use_channels_last
from t2i_nb.models import get_backbone
from t2i_nb.train import get_preset, _bench_system, _bench_batch

p = argparse.ArgumentParser(description=__doc__)
p.add_argument('--steps', type=int, default=300); p.add_argument('--out', default='cub256_steps.json')
p.add_argument('--precision', default='auto'); p.add_argument('--smoke', action='store_true')
a = p.parse_args()
cfg = get_preset('cub-256')
dev = default_device()
size, nf, bs = (32, 8, 4) if a.smoke else (cfg.net.gan.img_size, cfg.net.gan.nf, cfg.bs)
system = _bench_system(size, nf, cfg.net.backbone, cfg.net.text, dev)
cl = use_channels_last(None, dev, a.precision)
if cl: system.to(memory_format=torch.channels_last)
paper = get_backbone(cfg.net.backbone).paper
tr, ema = GANTrainer(system, AMP(a.precision, dev), cfg.lr_g, cfg.lr_d, paper['betas'], channels_last=cl), EMA(system.netG)
batch = _bench_batch(bs, size, dev)
losses, t0 = [], None
for i in range(a.steps + 5):
    if i == 5:
        if dev.type == 'cuda': torch.cuda.synchronize()
        t0 = time.perf_counter()
    tr.train_step(batch); ema.update(system.netG)
    losses += [float(v) for v in tr.last_logs.values() if isinstance(v, (int, float))]
if dev.type == 'cuda': torch.cuda.synchronize()
dt = time.perf_counter() - t0
res = {'device': str(dev), 'precision': tr.mp.mode, 'channels_last': cl, 'img_size': size, 'nf': nf, 'bs': bs, 'steps': a.steps,
       'seconds': round(dt, 2), 'img_per_s': round(a.steps * bs / dt, 2), 'finite': all(map(math.isfinite, losses)),
       'max_memory_gb': round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == 'cuda' else None}
Path(a.out).write_text(json.dumps(res, indent=1)); print(json.dumps(res))
sys.exit(0 if res['finite'] else 1)
