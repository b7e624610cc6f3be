"""Linear probes of a trained `t2i_train` run on the built-in shapes set: how well can one linear layer read the shape
and the colour of held-out real images from the discriminator's pooled features, and of their captions from the
generator's and the discriminator's sentence embeddings (S_G, S_D)?

    OMP_NUM_THREADS=1 python tools/research/probe_run.py RUN_DIR [--root data/shapes]

Prints one JSON line of held-out accuracies (chance 10 %). If S_G cannot tell shapes apart, neither can the generator:
the section "Where the shape information was lost" of nbs/tutorials/04_tuning.ipynb ("How the cpu-quick preset was
tuned") used this to find it.
"""
import argparse, json
import torch
from probe_encoders import attribute_probes
from t2i_nb.train import load_run
from t2i_nb.data import load_dataset, TextImageDataset
from t2i_nb.loaders import T2IDataLoader

def run_features(system, vocab, cfg, root, split:str) -> list[torch.Tensor]:
    "`[D features, S_G, S_D, labels]` of every image of `split` (one caption each)."
    tds = TextImageDataset(load_dataset('shapes', root, split), vocab, cfg.net.gan.img_size, train=False)
    out = []
    with torch.no_grad():
        for x, t, l, y, _ in T2IDataLoader(tds, bs=100, seed=0, device='cpu'):
            e = system.embed(t, l)
            out.append((system.netD(x).mean((2, 3)).float(), e.s_g.float(), e.s_d.float(), y))
    return [torch.cat(p) for p in zip(*out)]

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('run'); p.add_argument('--root', default='data/shapes')
    a = p.parse_args()
    torch.manual_seed(0)
    run = load_run(a.run, 'cpu')
    system, cfg, vocab = run.system, run.cfg, run.vocab
    tr, te = (run_features(system, vocab, cfg, a.root, s) for s in ('train', 'test'))
    feats = lambda f: dict(zip(('D', 's_g', 's_d'), f[:3]))
    print(json.dumps({'run': a.run, **attribute_probes(feats(tr), feats(te), tr[3], te[3])}))

if __name__ == '__main__': main()
