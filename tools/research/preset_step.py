"""Seconds per training step (D + G + EMA) of the cpu-quick preset's networks with overrides, on a random batch.

    OMP_NUM_THREADS=2 python tools/research/preset_step.py '{"net.gan.nf_d": 16}'   # PREC=bf16 for bf16; PROF=1 adds a profile

The encoders are random ones of the preset's sizes (their weights do not change the cost): what it measures is the
price of a step, to set against the oracle figures of `experiment.py` at equal wall time."""
import os, sys, json, time, torch
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '2')))
from t2i_nb.train import get_preset, apply_overrides, _bench_batch
from t2i_nb.gan import T2IGAN
from t2i_nb.encoders import RNNEncoder, CNNEncoder
from t2i_nb.engine import AMP, GANTrainer, EMA, use_channels_last

ov = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
cfg = apply_overrides(get_preset('cpu-quick'), ov)
prec = os.environ.get('PREC', 'fp32')
torch.manual_seed(0)
cond = cfg.net.gan.cond_dim
m = T2IGAN(cfg.net, RNNEncoder(60, nhidden=cond), CNNEncoder(nef=cond, img_size=cfg.net.gan.img_size), 100)
cl = use_channels_last(None, 'cpu', prec)
if cl: m.to(memory_format=torch.channels_last)
tr, ema = GANTrainer(m, AMP(prec, 'cpu'), cfg.lr_g, cfg.lr_d, (0., 0.9), channels_last=cl), EMA(m.netG)
b = _bench_batch(cfg.bs, cfg.net.gan.img_size, 'cpu', ntoken=60)
def step(): tr.train_step(b); ema.update(m.netG)
for _ in range(4): step()
n, t0 = 24, time.perf_counter()
for _ in range(n): step()
print(json.dumps({'overrides': ov, 'precision': tr.mp.mode, 'threads': torch.get_num_threads(), 's_per_step': round((time.perf_counter() - t0) / n, 4)}))
if os.environ.get('PROF'):
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(8): step()
    print(p.key_averages().table(sort_by='self_cpu_time_total', row_limit=22))
