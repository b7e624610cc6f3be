"""Collect the CPU-preset runs of the multi-stage backbones into nbs/results/multistage-cpu.json (what tutorial 05 shows).

    python tools/research/multistage_results.py RUN_DIR [RUN_DIR ...]

Each RUN_DIR is a `t2i_train --preset <backbone>-cpu` run scored by `t2i_eval`; the wall-clock times are read from
the `/usr/bin/time -v` logs named in TIMES (edit them for your runs)."""
import json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parents[2]
OUT = root/'nbs'/'results'/'multistage-cpu.json'
KEEP_ORACLE = ('shape', 'colour', 'size', 'position', 'all')

def wall(log:Path) -> float|None:
    "Seconds of the last `Elapsed (wall clock)` line of a `/usr/bin/time -v` log."
    hits = re.findall(r'Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)', log.read_text()) if log.is_file() else []
    if not hits: return None
    parts = [float(p) for p in hits[-1].split(':')]
    return round(sum(p * 60**i for i, p in enumerate(reversed(parts))), 1)

def collect(run:Path) -> dict:
    cfg, m, e = (json.loads((run/f).read_text()) for f in ('config.json', 'metrics.json', 'eval.json'))
    g, r = e['oracle']['generated'], e['oracle']['real']
    im = next(iter(e['image_metrics'].values()))
    return {'preset': cfg['preset'], 'backbone': cfg['net']['backbone'], 'text': cfg['net']['text'], 'scl': cfg['net']['scl'],
            'steps': m['steps'], 'bs': cfg['bs'], 'img_size': cfg['net']['gan']['img_size'], 'nf': cfg['net']['gan']['nf'],
            'precision': m.get('precision'), 'img_per_s_last_segment': m.get('img_per_s'),
            'oracle': {k: round(g[k]['accuracy'], 4) for k in KEEP_ORACLE if k in g},
            'oracle_real': {k: round(r[k]['accuracy'], 4) for k in KEEP_ORACLE if k in r},
            'fid': round(im['fid'], 2), 'r_precision': round(e['r_precision']['generated'], 4),
            'r_precision_dmgan': round(e['r_precision_dmgan']['generated'], 4), 'n_samples': e['n_samples'],
            'eval_seconds': round(e.get('seconds', 0), 1)}

if __name__ == '__main__':
    res = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for d in sys.argv[1:]: res[Path(d).name] = collect(Path(d))
    OUT.write_text(json.dumps(res, indent=1) + '\n')
    print(json.dumps(res, indent=1))
