"""Linear probes of pre-trained encoders on the built-in shapes set: can a linear layer read the shape and the colour
from the global image features, and from the sentence features, of held-out real images?

    OMP_NUM_THREADS=1 python tools/research/probe_encoders.py 40 [--root data/shapes] [--out encoders40] [--lr 1e-3]
                     [--schedule one_cycle] [--bs 64]

Pre-trains the encoders `t2i_train`'s cpu-quick preset would (with EPOCHS epochs) unless OUT already holds them, fits
one softmax layer per attribute on the training split's features and prints one JSON line with the held-out accuracy
(chance 10 %). The image-encoder probes of nbs/tutorials/04_tuning.ipynb ("How the cpu-quick preset was tuned": "A
shape-aware judge and a wider discriminator", "The image encoder is the next teacher", "A schedule for the pre-training")
were made with it. `--schedule one_cycle` trains with fastai's one-cycle policy (warm-up to LR, cosine down) instead of
the constant rate, keeping DAMSM's Adam beta1 of 0.5; the package's pre-training has no such option.
"""
import argparse, json
from pathlib import Path
import torch, torch.nn.functional as F
from fastai.learner import Learner
import fastai.callback.schedule   # Learner.fit_one_cycle
import t2i_nb.pretrain as _pre
from t2i_nb.train import get_preset, apply_overrides, encoder_config
from t2i_nb.pretrain import pretrain, load_pretrained, encode_dataset
from t2i_nb.data import dataset_root, load_dataset
from t2i_nb.shapes import COLOURS

def probe(x_tr, y_tr, x_te, y_te, n_cls:int, steps:int=500) -> float:
    "Held-out accuracy of a softmax layer trained on standardised features (Adam, light weight decay)."
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    lin = torch.nn.Linear(x_tr.shape[1], n_cls)
    opt = torch.optim.Adam(lin.parameters(), 1e-2, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad(); F.cross_entropy(lin(x_tr), y_tr).backward(); opt.step()
    with torch.no_grad(): return float((lin(x_te).argmax(1) == y_te).float().mean())

def attribute_probes(tr:dict, te:dict, y_tr, y_te) -> dict:
    "`{NAME_shape, NAME_colour: held-out accuracy}` for each named feature set (`tr`/`te`: name -> features; y: class indices)."
    n = len(COLOURS)   # class index = shape * len(COLOURS) + colour (t2i_nb.shapes.class_index)
    return {f'{name}_{attr}': round(probe(tr[name], lab(y_tr), te[name], lab(y_te), n), 3)
            for attr, lab in (('shape', lambda y: y // n), ('colour', lambda y: y % n)) for name in tr}

def one_cycle(pct:float=0.25):
    "Make `pretrain` fit with the one-cycle policy: its `learn.fit(epochs, lr)` becomes `fit_one_cycle(epochs, lr)` with beta1 held at 0.5."
    make = _pre.damsm_learner
    def learner(*a, **k):
        learn = make(*a, **k)
        def fit(n, lr):
            del learn.fit   # fit_one_cycle calls the class's fit
            Learner.fit_one_cycle(learn, n, lr, moms=(0.5, 0.5, 0.5), pct_start=pct)
        learn.fit = fit
        return learn
    _pre.damsm_learner = learner

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('epochs', type=int); p.add_argument('--root', default=None); p.add_argument('--out', default=None)
    p.add_argument('--lr', type=float, default=None, help="pre-training learning rate (default: the cpu-quick preset's)")
    p.add_argument('--schedule', default='constant', choices=('constant', 'one_cycle'), help='learning-rate schedule (default: constant, the preset\'s)')
    p.add_argument('--bs', type=int, default=None, help="pre-training batch size (default: the cpu-quick preset's, 32)")
    a = p.parse_args()
    torch.manual_seed(0)
    if a.schedule == 'one_cycle': one_cycle()
    cfg = apply_overrides(get_preset('cpu-quick'), {'pretrain_epochs': a.epochs, **({'pretrain_lr': a.lr} if a.lr else {}), **({'bs': a.bs} if a.bs else {})})
    root = dataset_root('shapes', a.root, n=cfg.n_images, size=64, seed=0)
    out = Path(a.out or f'encoders{a.epochs}')
    pcfg = encoder_config(cfg, root, device='cpu')
    if not (out/'config.json').exists(): pretrain(pcfg, out=out, progress=False, log=lambda *x: None)
    text, img, vocab, _ = load_pretrained(out, device='cpu')
    tr, te = (encode_dataset(text, img, load_dataset('shapes', root, s), vocab, cfg.net.gan.img_size) for s in ('train', 'test'))
    feats = lambda e: {'img': e.img, 'txt': e.txt}
    print(json.dumps({'epochs': a.epochs, 'lr': pcfg.lr, 'schedule': a.schedule, 'bs': pcfg.bs, **attribute_probes(feats(tr), feats(te), tr.labels, te.labels)}))

if __name__ == '__main__': main()
