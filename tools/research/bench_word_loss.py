"""Forward + backward time of the DAMSM word scores, building the context vectors c_t or using the regions' Gram matrix
(`word_region_scores(..., gram=False|True)`), at the cpu-quick preset's shapes and at the papers' (Inception regions).

    python tools/research/bench_word_loss.py [--reps 5]

Both ways run in the same process, alternating, and the best of `reps` is kept; the ratio is what to compare across
machines. The "Two ways to the cosine" paragraph of nbs/04_losses.ipynb quotes it, and "The image encoder is the next
teacher" of nbs/tutorials/04_tuning.ipynb ("How the cpu-quick preset was tuned") tells why it was written.
"""
import argparse, json, time
import torch
from t2i_nb.losses import word_region_scores

SHAPES = {'cpu-quick (B 32, D 128, 8x8 regions)': (32, 128, 8), 'papers (B 48, D 256, 17x17 regions)': (48, 256, 17)}

def step_ms(img, words, lens, gram:bool) -> float:
    t = time.perf_counter()
    word_region_scores(img, words, lens, gram=gram)[0].logsumexp(0).sum().backward()
    return 1000 * (time.perf_counter() - t)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0]); p.add_argument('--reps', type=int, default=5)
    a = p.parse_args()
    for name, (B, D, hw) in SHAPES.items():
        g = torch.Generator().manual_seed(0)
        img = torch.randn(B, D, hw, hw, generator=g, requires_grad=True)
        words = torch.randn(B, D, 18, generator=g, requires_grad=True)
        lens = torch.randint(3, 19, (B,), generator=g)
        best = {False: float('inf'), True: float('inf')}
        for _ in range(a.reps + 1):                       # the first round warms up
            for gram in best: best[gram] = min(best[gram], step_ms(img, words, lens, gram))
        print(json.dumps({'shapes': name, 'c_t_ms': round(best[False], 1), 'gram_ms': round(best[True], 1),
                          'speedup': round(best[False] / best[True], 2), 'threads': torch.get_num_threads()}))

if __name__ == '__main__': main()
