"Fast tests of the ablation study (t2i_nb.ablation): summaries, tables, verdicts, resumption, configuration, bad input."
import json, math, os, shutil, subprocess, sys, tempfile
from pathlib import Path
import pytest
from t2i_nb.core import T2IError
from t2i_nb import ablation as abl
from t2i_nb.ablation import (ROWS, QUICK, FULL, CLAIMS, AblationConfig, summarize, ablation_markdown, verdicts, verdict_markdown,
                             row_config, run_ablation, result_path, run_dir_of, t2i_ablation, shard_plan, study_plan,
                             merge_results, write_report, judge_config)
from t2i_nb.train import encoder_config, get_preset


def fake_result(row, dataset, seed, fid, rp, acc, steps=100, colour=0.9):
    colour_key = 'oracle_colour' if dataset == 'shapes' else 'oracle_colours'
    return {'row': row, 'dataset': dataset, 'seed': seed, 'steps': steps,
            'metrics': {'fid': fid, 'kid': fid / 1000, 'r_precision': rp, 'oracle_shape': acc, colour_key: colour, 'oracle_all': acc / 2}}


def three(row, fids, rps, accs, dataset='shapes'):
    return [fake_result(row, dataset, s, f, r, a) for s, (f, r, a) in enumerate(zip(fids, rps, accs))]


# --- summaries, tables, verdicts on synthetic results ---

def test_summarize_mean_std_ci_n():
    res = three('dfgan', (40, 41, 42), (0.2, 0.2, 0.2), (0.5, 0.6, 0.7)) + three('dte', (30, 30, 30), (0.3, 0.4, 0.5), (1, 1, 1))
    s = summarize(res[::-1])
    assert list(s['shapes']) == ['dfgan', 'dte']                      # ROWS order, whatever the input order
    d = s['shapes']['dfgan']
    assert (d['n'], d['seeds'], d['steps']) == (3, [0, 1, 2], [100])
    f = d['metrics']['fid']
    assert (f['mean'], f['std'], f['n'], f['values']) == (41.0, 1.0, 3, [40., 41., 42.])   # sample std (n - 1)
    assert math.isclose(f['ci95'], 4.302653 / math.sqrt(3), rel_tol=1e-5)                  # Student's t, 2 degrees of freedom
    assert math.isclose(d['metrics']['oracle_shape']['std'], 0.1)
    assert list(d['metrics']) == ['fid', 'kid', 'r_precision', 'oracle_shape', 'oracle_colour', 'oracle_all']
    assert summarize(res[:1])['shapes']['dfgan']['metrics']['fid']['std'] is None
    with pytest.raises(T2IError, match='a seed is repeated'): summarize(res[:1] * 2)


def test_summarize_two_datasets_and_missing_metric():
    res = three('dfgan', (1, 2, 3), (0.1,) * 3, (0.5,) * 3, 'shapes-multi') + three('dfgan', (1, 2, 3), (0.1,) * 3, (0.5,) * 3)
    del res[0]['metrics']['oracle_all']                               # withheld by the oracle in one run
    s = summarize(res)
    assert list(s) == ['shapes', 'shapes-multi']
    assert s['shapes-multi']['dfgan']['metrics']['oracle_all']['n'] == 2
    assert s['shapes-multi']['dfgan']['metrics']['oracle_all']['values'] == [0.25, 0.25]


def test_markdown_has_every_row_and_mean_pm_interval():
    res = [r for row in ROWS for r in three(row, (10, 11, 12), (0.2, 0.3, 0.4), (0.5, 0.5, 0.5))]
    md = ablation_markdown(summarize(res))
    for row in ROWS: assert f'| {row} |' in md
    assert '### shapes' in md and '| 11.00 ± 2.48 |' in md and '| 30.0 ± 24.8 |' in md and '### Verdicts' in md
    assert '| 3 |' in md                                               # n seeds
    assert '(1 seed)' in ablation_markdown(summarize(res[:1]))
    part = ablation_markdown(summarize(res[:3]), expected={'shapes': (('dfgan', 'dte'), 3)})
    assert '| dfgan | dfgan | damsm | none | none | 3/3 |' in part and '| dte | dfgan | dte | none | - | 0/3 | not run yet |' in part


def test_verdicts_held_reversed_noise_one_seed():
    base = three('dfgan', (40, 41, 42), (0.20, 0.21, 0.22), (0.5, 0.5, 0.5))
    better = three('dfgan+scl', (30, 31, 32), (0.40, 0.41, 0.42), (0.5, 0.48, 0.52))
    worse = three('dfgan+scl', (50, 51, 52), (0.10, 0.11, 0.12), (0.5, 0.5, 0.5))
    noisy = three('dte', (35, 39, 43), (0.3, 0.3, 0.3), (0.6, 0.6, 0.6)) + three('dte-shared', (36, 40, 44), (0.3, 0.3, 0.3), (0.6, 0.6, 0.6))
    v = {x['claim']: x for x in verdicts(summarize(base + better + noisy))}
    scl = v['SCL improves over the baseline (DF-GAN)']
    assert scl['overall'] == 'held'
    assert [c['outcome'] for c in scl['comparisons']] == ['held', 'held', 'within noise']
    c = scl['comparisons'][0]
    assert math.isclose(c['gain'], 10) and [round(x, 2) for x in c['ci']] == [7.73, 12.27] and c['p'] < 0.001
    assert v['dual embeddings beat a shared one']['overall'] == 'not shown (within noise)'
    assert 'SCL beats UniCL (DF-GAN)' not in v                         # a row that was not run: no verdict
    assert verdicts(summarize(base + worse))[0]['overall'] == 'reversed'
    mixed = three('dfgan+scl', (30, 31, 32), (0.10, 0.11, 0.12), (0.5, 0.5, 0.5))
    assert verdicts(summarize(base + mixed))[0]['overall'] == 'mixed'
    assert verdicts(summarize(base[:1] + better[:1]))[0]['overall'] == 'not judged (one seed)'
    text = verdict_markdown(verdicts(summarize(base + better)))
    assert 'SCL improves over the baseline (DF-GAN)' in text and '**held**' in text and 'FID +10.00 [7.73, 12.27], p = ' in text


def test_welch_matches_scipy_and_untrained_rows_are_not_testable():
    from scipy import stats
    base = three('dfgan', (40, 44, 41), (0.20, 0.25, 0.22), (0.5, 0.5, 0.5))
    scl = three('dfgan+scl', (36, 35, 39), (0.30, 0.26, 0.33), (0.5, 0.5, 0.5))
    c = verdicts(summarize(base + scl))[0]['comparisons'][0]
    assert math.isclose(c['p'], stats.ttest_ind([36, 35, 39], [40, 44, 41], equal_var=False).pvalue, rel_tol=1e-9)
    cold = [r | {'metrics': r['metrics'] | {'oracle_colour': 0.12}} for r in base]
    v = verdicts(summarize(cold + scl))[0]
    assert (v['overall'], v['reason'], v['comparisons']) == ('not testable at this budget', 'dfgan: oracle colour 12 % < 50 %', [])
    assert 'not testable at this budget**: dfgan: oracle colour 12 %' in verdict_markdown([v])
    assert verdicts(summarize(cold + scl), learned=0.1)[0]['overall'] != 'not testable at this budget'


def test_gain_across_sets_by_bootstrap():
    one = three('dfgan', (40, 41, 42), (0.2,) * 3, (0.5,) * 3) + three('dfgan+scl', (30, 31, 32), (0.3,) * 3, (0.5,) * 3)
    several = lambda fid_scl: (three('dfgan', (80, 81, 82), (0.2,) * 3, (0.5,) * 3, 'shapes-multi') +
                               three('dfgan+scl', fid_scl, (0.3,) * 3, (0.5,) * 3, 'shapes-multi'))
    g = lambda res: [v for v in verdicts(summarize(res)) if v['kind'] == 'gain'][0]
    assert g(one + several((50, 51, 52)))['overall'] == 'held'        # 37 % on several objects against 24 % on one
    assert g(one + several((70, 71, 72)))['overall'] == 'reversed'    # 12 % against 24 %
    assert g(one + several((50, 61, 72)))['overall'] == 'not shown (within noise)'
    assert not [v for v in verdicts(summarize(one)) if v['kind'] == 'gain']   # one set only: no gain claim


# --- configuration ---

def test_rows_have_an_equal_budget_and_shared_encoders():
    cfgs = {r: row_config(FULL, r, 'shapes', 2) for r in ROWS}
    for claim, a, b in CLAIMS:                                         # every claim: two rows at one budget
        for k in ('steps', 'bs', 'lr_g', 'lr_d', 'n_critic', 'ema_decay', 'precision', 'pretrain_epochs', 'seed'):
            assert getattr(cfgs[a], k) == getattr(cfgs[b], k), (claim, k)
        assert cfgs[a].net.gan == cfgs[b].net.gan, claim
    for r, c in cfgs.items():
        assert (c.net.backbone, c.net.text, c.net.scl, c.preset) == (ROWS[r].backbone, ROWS[r].text, ROWS[r].scl, ROWS[r].preset)
        assert (c.steps, c.bs) == (get_preset(ROWS[r].preset).steps, 32)   # the preset's budget unless the study overrides it
        if c.net.text == 'clip': assert c.encoders is None and Path(c.clip).name == 'seed2-clip-none'
        else: assert (c.encoders is None) == (ROWS[r].pretrain is None) == (not c.needs_encoders)
    assert cfgs['dfgan+scl'].encoders == cfgs['dte+scl'].encoders == cfgs['attngan+scl'].encoders
    assert row_config(FULL.replace(steps=700), 'galip', 'shapes', 0).steps == row_config(FULL.replace(steps=700), 'dfgan', 'shapes', 0).steps == 700
    assert Path(cfgs['dfgan+ce'].encoders).name == 'seed2-ce'
    q = row_config(QUICK, 'dte', 'shapes-multi', 0)
    assert (q.steps, q.bs, q.net.gan.img_size, q.net.gan.nf, q.n_images) == (10, 16, 32, 8, 120)


def test_study_encoders_are_what_t2i_train_would_pretrain(tmp_path, monkeypatch):
    "The study's shared encoders (encoder_config) are the ones a single t2i_train run pre-trains for itself."
    import t2i_nb.pretrain as P, t2i_nb.train as T
    from t2i_nb.train import _encoders_for
    seen = {}
    monkeypatch.setattr(P, 'pretrain', lambda cfg, out=None, **kw: seen.setdefault('cfg', cfg))
    monkeypatch.setattr(T, 'load_pretrained', lambda *a, **kw: (None, None, None, None))   # train imports it from pretrained
    for row in ('dfgan+scl', 'dfgan+ce', 'dte+scl', 'dfgan'):
        tc = row_config(QUICK, row, 'shapes-multi', 1).replace(encoders=None)
        seen.clear()
        _encoders_for(tc, tmp_path/row, Path(tc.root), 'cpu', lambda *a: None, False)
        assert seen['cfg'] == encoder_config(tc, device='cpu'), row


def test_config_roundtrip_and_bad_input():
    assert AblationConfig.from_json(QUICK.to_json()) == QUICK
    with pytest.raises(T2IError, match="unknown row 'stylegan'"): FULL.replace(rows=('dfgan', 'stylegan')).check()
    with pytest.raises(T2IError, match="unknown dataset 'cub'"): FULL.replace(datasets=('cub',)).check()
    with pytest.raises(T2IError, match='repeated'): FULL.replace(seeds=(1, 1)).check()
    with pytest.raises(T2IError, match='unknown key'): AblationConfig.from_dict({'rowz': []})


# --- resumption, with training and evaluation replaced by counters ---

@pytest.fixture
def fake_study(tmp_path, monkeypatch):
    calls = {'train': [], 'eval': [], 'pretrain': []}
    def train(cfg, run_dir, resume=False, **kw):
        calls['train'].append((str(run_dir), resume))
        run_dir = Path(run_dir); run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir/'checkpoint.pt').write_text('x')
        (run_dir/'metrics.json').write_text(json.dumps({'steps': cfg.steps, 'train_seconds': 0.1}))
    def evaluate_run(run_dir, **kw):
        calls['eval'].append(str(run_dir))
        h = sum(map(ord, str(run_dir))) % 7
        return {'image_metrics': {'evaluator': {'fid': 10. + h, 'kid': 0.01}}, 'r_precision': {'generated': 0.1 * h},
                'oracle': {'generated': {'shape': {'accuracy': 0.5, 'n': 4}, 'all': {'accuracy': 0.25, 'n': 4}}}, 'notes': []}
    def ensure_encoders(pcfg, out, log=None):
        calls['pretrain'].append(str(out)); return Path(out)
    monkeypatch.setattr(abl, 'train', train)
    monkeypatch.setattr(abl, 'evaluate_run', evaluate_run)
    monkeypatch.setattr(abl, 'ensure_encoders', ensure_encoders)
    monkeypatch.setattr(abl, 'dataset_dir', lambda cfg, ds: cfg.data_dir/ds)
    cfg = QUICK.replace(out=str(tmp_path/'study'), seeds=(0, 1, 2), rows=('dfgan', 'dte', 'dfgan+scl'))
    return cfg, calls


def test_resume_skips_finished_runs(fake_study):
    cfg, calls = fake_study
    rep = run_ablation(cfg, log=None)
    n = 3 * 2 * 3
    assert (rep['n_runs'], rep['n_skipped'], len(calls['train']), len(calls['eval'])) == (n, 0, n, n)
    assert all(not resume for _, resume in calls['train'])
    out = Path(cfg.out)
    assert {p.name for p in out.iterdir()} >= {'results', 'ablation.md', 'ablation.json', 'ablation.png', 'study_config.json'}
    assert len(list((out/'results').glob('*.json'))) == n
    saved = json.loads((out/'ablation.json').read_text())
    assert saved['summary'] == rep['summary'] and (saved['n_finished'], saved['n_planned'], saved['missing']) == (n, n, [])
    assert len(saved['runs']) == n and all(r['command'].startswith('t2i_ablation --out ') for r in saved['runs'])
    assert all(s['n'] == 3 for rows in rep['summary'].values() for s in rows.values())

    rep2 = run_ablation(cfg, log=None)                                 # everything finished: nothing runs
    assert (rep2['n_skipped'], len(calls['train']), len(calls['eval'])) == (n, n, n)
    assert rep2['summary'] == rep['summary']

    result_path(cfg, 'dte', 'shapes', 1).unlink()                     # stopped after training, before the result
    run_ablation(cfg, log=None)
    assert (len(calls['train']), len(calls['eval'])) == (n, n + 1)

    victim = run_dir_of(cfg, 'dfgan', 'shapes-multi', 2)                # stopped mid-training, a checkpoint exists
    result_path(cfg, 'dfgan', 'shapes-multi', 2).unlink(); (victim/'metrics.json').unlink()
    run_ablation(cfg, log=None)
    assert calls['train'][-1] == (str(victim), True) and len(calls['eval']) == n + 2


def test_resume_with_another_budget_is_an_error(fake_study):
    cfg, calls = fake_study
    run_ablation(cfg.replace(rows=('dfgan',), datasets=('shapes',), seeds=(0,)), log=None)
    with pytest.raises(T2IError, match=r'comes from another study configuration \(it was trained with steps=10, this run has steps=12\)'):
        run_ablation(cfg.replace(rows=('dfgan',), datasets=('shapes',), seeds=(0,), steps=12), log=None)


def test_runs_share_one_encoder_folder_per_dataset_seed_loss(fake_study):
    cfg, calls = fake_study
    run_ablation(cfg.replace(rows=tuple(ROWS), seeds=(0,)), log=None)
    folders = set(calls['pretrain'])          # asked for by every run that needs encoders, plus the judge
    assert len(folders) == 2 * (4 + 1 + 1)                             # per set: none, supcon, unicl, ce, the judge, GALIP's CLIP
    assert any(f.endswith('shapes/seed0-clip-none') for f in folders)
    assert any(f.endswith('shapes/seed1000-none') for f in folders)


def test_shards_share_a_folder_and_merge_across_folders(fake_study, tmp_path):
    cfg, calls = fake_study
    plan = study_plan(cfg)
    a = run_ablation(cfg, log=None, shard='1/2', results_file=tmp_path/'committed.json')
    assert a['n_runs'] == len(plan[0::2]) and (a['n_finished'], a['n_planned']) == (len(plan[0::2]), len(plan))
    committed = json.loads((tmp_path/'committed.json').read_text())     # the committed copy marks what is missing
    assert [tuple(m) for m in committed['missing']] == plan[1::2]
    assert f'{len(plan[1::2])} of {len(plan)} planned runs have not finished yet' in a['markdown']
    other = cfg.replace(out=str(tmp_path/'elsewhere'))                 # the other half, on another machine
    run_ablation(other, log=None, shard='2/2')
    assert merge_results(cfg, [other.out]) == len(plan[1::2]) and merge_results(cfg, [other.out]) == 0
    rep = write_report(cfg)
    assert (rep['n_finished'], rep['missing']) == (len(plan), [])
    assert len(calls['train']) == len(plan)                            # every run trained once, in one of the two places
    with pytest.raises(T2IError, match='comes from another study configuration'):
        merge_results(cfg.replace(out=str(tmp_path/'third'), steps=11), [other.out])
    with pytest.raises(T2IError, match='--shard must be i/n'): shard_plan(plan, '1of2')


def test_ensure_encoders_reuses_a_finished_folder(tmp_path, monkeypatch):
    def no_pretrain(*a, **kw): raise AssertionError('pre-trained again')
    monkeypatch.setattr(abl, 'pretrain', no_pretrain)
    pcfg = encoder_config(row_config(QUICK, 'dfgan+scl', 'shapes', 0), device='cpu')
    out = tmp_path/'enc'; out.mkdir()
    (out/'config.json').write_text(pcfg.resolved().replace(device='cuda').to_json())   # the device may differ
    (out/'metrics.json').write_text('{}')
    assert abl.ensure_encoders(pcfg, out, log=None) == out
    with pytest.raises(T2IError, match="holds other encoders \\(they were trained with scl='supcon', this run has scl='unicl'\\)"):
        abl.ensure_encoders(pcfg.replace(scl='unicl'), out, log=None)
    (out/'metrics.json').unlink()                                     # an unfinished folder is pre-trained again
    with pytest.raises(AssertionError, match='pre-trained again'): abl.ensure_encoders(pcfg, out, log=None)


# --- the console script ---

def test_cli_unknown_row_is_one_line(tmp_path):
    exe = shutil.which('t2i_ablation')
    cmd = [exe] if exe else [sys.executable, '-c', 'from t2i_nb.ablation import t2i_ablation; t2i_ablation()']
    r = subprocess.run(cmd + ['--rows', 'dfgan,stylegan', '--out', str(tmp_path/'x')], capture_output=True, text=True,
                       timeout=120, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 2, r.stderr
    err = [l for l in r.stderr.splitlines() if not l.lstrip().startswith(('warnings.warn', '/')) and 'Warning' not in l]
    assert err == [f"error: unknown row 'stylegan': use one of {', '.join(ROWS)}"], r.stderr
    assert 'Traceback' not in r.stderr and not (tmp_path/'x').exists()


def test_cli_unknown_dataset_in_process(tmp_path, capsys):
    with pytest.raises(SystemExit) as e: t2i_ablation(datasets='shapes,cub', out=str(tmp_path/'x'))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown dataset 'cub'") and err.count('\n') == 1
    with pytest.raises(SystemExit): t2i_ablation(seeds='0,one', out=str(tmp_path/'x'))
    assert 'expected a comma-separated list of numbers' in capsys.readouterr().err
