"""Collect runs of the backbones' CPU presets into a results file the notebooks show: the multi-stage ones into
nbs/results/multistage-cpu.json (tutorial 05), GALIP's into nbs/results/galip-cpu.json (chapter 06f).

    python tools/research/cpu_preset_results.py [--out FILE] [--time LOG] RUN_DIR [RUN_DIR ...]

Each RUN_DIR is a `t2i_train --preset <backbone>-cpu` run scored by `t2i_eval`; `--time LOG` is the
`/usr/bin/time -v` log of the (single) run's t2i_train command, for its wall-clock time."""
import argparse, json, re, sys
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
            'fid': round(im['fid'], 2), 'kid': round(im['kid'], 6), 'r_precision': round(e['r_precision']['generated'], 4),
            'r_precision_real': round(e['r_precision']['real'], 4), 'r_precision_judge': e['r_precision'].get('encoders'),
            'r_precision_dmgan': round(e['r_precision_dmgan']['generated'], 4) if 'r_precision_dmgan' in e else None,
            'clip_score': {k: round(v, 4) for k, v in e['clip_score'].items() if isinstance(v, float)} if 'clip_score' in e else None,
            'n_samples': e['n_samples'], 'train_seconds': m.get('train_seconds'), 'eval_seconds': round(e.get('seconds', 0), 1)}

def clip_pretrain(run:Path) -> dict|None:
    "The small CLIP a text-'clip' run pre-trained into RUN/clip: its size and held-out retrieval."
    f = run/'clip'/'metrics.json'
    if not f.is_file(): return None
    m = json.loads(f.read_text())
    return {k: m[k] for k in ('epochs', 'r_precision', 'i2t_r1', 't2i_r1', 'train_seconds', 'params') if k in m}

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('runs', nargs='+'); ap.add_argument('--out', default=str(OUT)); ap.add_argument('--time')
    a = ap.parse_args()
    out = Path(a.out)
    res = json.loads(out.read_text()) if out.is_file() else {}
    for d in a.runs:
        r = collect(Path(d))
        if (c := clip_pretrain(Path(d))) is not None: r['clip_pretrain'] = c
        if a.time: r['job_wall_seconds'] = wall(Path(a.time))
        res[Path(d).name] = r
    out.write_text(json.dumps(res, indent=1) + '\n')
    print(json.dumps(res, indent=1))
