"""One tuning experiment: the cpu-quick preset with dotted-path overrides, trained and judged by `t2i_eval`'s oracle.

    OMP_NUM_THREADS=1 python tools/research/experiment.py NAME '{"steps": 1200, "net.gan.nf": 16, "lr_g": 4e-4}' [--n_samples 300]

Starts from the *current* cpu-quick preset and applies the overrides with `t2i_nb.train.apply_overrides` (dotted paths
as in `t2i_train`; changing `net.gan.nf` alone keeps the preset's D/G width ratio, so give `net.gan.nf_d` to set D's
width). Trains into runs/experiments/NAME, evaluates `--n_samples` generated images, prints one JSON line with the
oracle's accuracy per attribute, R-precision and the evaluator FID, and appends it to runs/experiments/results.jsonl.
The experiment tables of nbs/tutorials/04_tuning.ipynb ("How the cpu-quick preset was tuned") were made with it (two
experiments at a time, one thread each). `--curve 1500,2000` also judges the run at those steps on the way (it trains to
each, judges, then resumes exactly: the learning rates are constant, so a point equals a shorter run), one line each.
Run again on a finished experiment with a larger `steps`, it continues from where it stopped (`train_s` then counts
the new steps only).
"""
import argparse, json, time
from pathlib import Path
from t2i_nb.core import T2IError
from t2i_nb.train import get_preset, apply_overrides, train
from t2i_nb.metrics import evaluate_run

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('name'); p.add_argument('overrides', nargs='?', default='{}')
    p.add_argument('--n_samples', type=int, default=300); p.add_argument('--out', default='runs/experiments')
    p.add_argument('--curve', default='', help='comma-separated earlier steps to judge the run at on the way')
    a = p.parse_args()
    ov = json.loads(a.overrides)
    try: cfg = apply_overrides(get_preset('cpu-quick'), ov)
    except (T2IError, TypeError) as e: raise SystemExit(f'error: bad override in {a.overrides}: {e}')
    run = Path(a.out)/a.name
    points = sorted({int(s) for s in a.curve.split(',') if s} | {cfg.steps})
    if points[0] < 1 or points[-1] > cfg.steps: raise SystemExit(f'error: --curve steps must lie in 1..{cfg.steps}')
    done = json.loads((run/'metrics.json').read_text())['steps'] if (run/'metrics.json').exists() else 0
    points = [s for s in points if s > done]          # a finished run given more steps (or a longer curve) goes on
    t_train = 0.
    for i, steps in enumerate(points):
        t0 = time.time()
        train(cfg.replace(steps=steps), run, resume=i > 0 or done > 0, log=lambda *x: None)
        t_train += time.time() - t0                    # pre-training + GAN steps so far, without the judging
        r = evaluate_run(run, n_samples=a.n_samples, log=None)
        m = json.loads((run/'metrics.json').read_text())
        line = {'name': a.name if steps == cfg.steps else f'{a.name}@{steps}', 'overrides': ov, 'steps': steps,
                'train_s': round(t_train), 'img_s': m['img_per_s'],
                **{k: round(v['accuracy'], 3) for k, v in r['oracle']['generated'].items()},
                'r_precision': round(r['r_precision']['generated'], 3), 'fid_evaluator': round(r['image_metrics']['evaluator']['fid'], 1)}
        print(json.dumps(line), flush=True)
        with open(Path(a.out)/'results.jsonl', 'a') as f: f.write(json.dumps(line) + '\n')

if __name__ == '__main__': main()
