"""Would splitting a batch over the cores beat threading one process? The engine's DF-GAN step (nf 32, channels-last,
MA-GP every step: `t2i_bench train`'s same-maths engine) at one batch size, timed in this process.

    OMP_NUM_THREADS=2 python tools/research/dp_probe.py 64 32 fp32          # one process, both cores, the whole batch
    (OMP_NUM_THREADS=1 python tools/research/dp_probe.py 64 16 fp32 & \\
     OMP_NUM_THREADS=1 python tools/research/dp_probe.py 64 16 fp32; wait)  # two processes, half the batch each

The second form leaves out the gradient all-reduce that data-parallel training adds, so its summed images/s is an
upper bound of what `torchrun --nproc_per_node 2` with one thread per process could give."""
import os, sys, json, torch
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '2')))
from t2i_nb.train import _bench_system, _bench_batch, _time, get_backbone
from t2i_nb.engine import AMP, GANTrainer, EMA

size, bs, prec = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else 'fp32'
dev, p = torch.device('cpu'), get_backbone('dfgan').paper
s = _bench_system(size, 32, 'dfgan', 'damsm', dev, gp_every=1).to(memory_format=torch.channels_last)
tr, ema = GANTrainer(s, AMP(prec, dev), p['lr_g'], p['lr_d'], p['betas'], channels_last=True), EMA(s.netG)
b = _bench_batch(bs, size, dev)
def step(): tr.train_step(b); ema.update(s.netG)
t = _time(step, 5, 1, dev)
print(json.dumps(dict(size=size, bs=bs, precision=tr.mp.mode, threads=torch.get_num_threads(), s_per_step=round(t, 3), img_s=round(bs / t, 2))))
