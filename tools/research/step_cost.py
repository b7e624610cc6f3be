"""Seconds of one D step and one G step (forward + backward, no optimizer) of a CPU preset's networks at batch 32, 32 px.

    OMP_NUM_THREADS=2 python tools/research/step_cost.py attngan   # or dmgan

The sizes are those of `attngan-cpu` / `dmgan-cpu` (nf 16, nf_d 16, z 64, cond 128, DAMSM text side)."""
import torch, time, sys, os
from t2i_nb.train import _bench_batch
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '2')))
bb = sys.argv[1] if len(sys.argv) > 1 else 'attngan'
from t2i_nb.gan import T2IConfig, T2IGAN
from t2i_nb.models import GANConfig
from t2i_nb.encoders import RNNEncoder, CNNEncoder, TextEmbedConfig
cfg = T2IConfig(backbone=bb, text='damsm', gan=GANConfig(img_size=32, nf=16, nf_d=16, z_dim=64, cond_dim=128))
m = T2IGAN(cfg, RNNEncoder(200, ninput=64, nhidden=128), CNNEncoder(nef=128, img_size=32), 100)
batch = _bench_batch(32, 32, 'cpu')
for part in ('d', 'g'):
    f = (lambda: m.d_loss(batch)[0].backward()) if part == 'd' else (lambda: m.g_loss(batch)[0].backward())
    f()
    t0 = time.perf_counter()
    for _ in range(3): f()
    print(part, (time.perf_counter() - t0) / 3)
