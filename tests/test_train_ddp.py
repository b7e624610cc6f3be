"Two training processes on the CPU (gloo): gradients are averaged, the weights stay identical, the data is sharded."
import os, socket
from pathlib import Path
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fastai.callback.core import Callback
from t2i_nb.shapes import make_shapes


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


class _SeenIdx(Callback):
    order = 15   # before GANTrainer (20), whose before_batch ends the batch
    def __init__(self): self.seen = []
    def before_batch(self):
        if self.training: self.seen.append(self.learn.yb[-1].tolist())


def _worker(rank, world, port, root, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from t2i_nb.core import set_seed
    from t2i_nb.data import load_shapes, Vocab
    from t2i_nb.loaders import get_dls
    from t2i_nb.models import GANConfig
    from t2i_nb.encoders import TextEmbedConfig
    from t2i_nb.gan import T2IGAN, T2IConfig
    from t2i_nb.engine import init_distributed, broadcast_state, gan_learner, fit_steps, load_checkpoint
    dev = init_distributed('cpu')
    tr, te = load_shapes(root, 'train'), load_shapes(root, 'test')
    vocab = Vocab.build(tr.captions)
    dls = get_dls(tr, te, vocab, bs=8, size=32, seed=0, device='cpu')
    set_seed(rank)   # deliberately different initial weights: broadcast_state must make them equal
    system = T2IGAN(T2IConfig(text='dte', gan=GANConfig(img_size=32, nf=8, z_dim=16, cond_dim=32),
                              dte=TextEmbedConfig(ntoken=len(vocab), ninput=16, nhidden=32)))
    broadcast_state(system)
    g0 = torch.cat([p.detach().flatten().clone() for p in system.netG.parameters()])
    seen = _SeenIdx()
    learn = gan_learner(dls, system, out, ckpt_every=2, progress=False, cbs=[seen])
    fit_steps(learn, 3)
    flat = lambda m: torch.cat([t.detach().flatten() for t in m.state_dict().values()])
    torch.save({'G': flat(system.netG), 'D': flat(system.backbone.netD), 'text': flat(system.text), 'ema': flat(learn.ema.generator),
                'g0': g0, 'seen': seen.seen, 'loss': learn.loss_history.history['loss_D']}, Path(out)/f'rank{rank}.pt')
    dist.barrier()
    dist.destroy_process_group()


def test_two_processes_stay_identical(tmp_path):
    root = make_shapes(tmp_path/'shapes', n=80, size=32, seed=0)
    out = tmp_path/'run'; out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(root), str(out)), nprocs=2, join=True)
    r0, r1 = (torch.load(out/f'rank{r}.pt', weights_only=True) for r in (0, 1))
    for k in ('G', 'D', 'text', 'ema'): torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0)
    assert not torch.equal(r0['G'][:len(r0['g0'])], r0['g0'])          # and they did train
    assert r0['loss'] == r1['loss']                                     # logged losses: the mean over the processes
    assert len(r0['seen']) == len(r1['seen']) == 3
    assert all(set(a).isdisjoint(b) for a, b in zip(r0['seen'], r1['seen']))   # each process its own batches
    from t2i_nb.engine import load_checkpoint
    ck = load_checkpoint(out)                                           # written by process 0 only, with both RNG states
    assert ck['step'] == 3 and len(ck['rng']) == 2
