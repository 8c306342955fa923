"""The claims of tests/test_demo_claims.py on a demo variant: the claims config (Random + S-1, no variants,
2 threads) with overrides, one run per seed; one JSON line per seed (numbers, stage timings, whether all claims hold).
usage: python benchmarks/probe_demo_claims.py OUT TAG '{"multiclass.epochs": 10}' SEED [SEED ...]"""
import json, sys, time
from pathlib import Path
from sklearn.metrics import adjusted_rand_score
from repcam.config import demo_config, from_dict
from repcam.pipeline.run import Run
from repcam.store.storage import read_json

out, tag, ov = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
for seed in map(int, sys.argv[4:]):
    d = demo_config().to_dict()
    for k, v in ov.items():
        a, b = k.split(".")
        d[a][b] = v
    d["seed"] = seed
    d["selection"]["methods"] = ["random", "s1"]
    d["evaluation"]["variants"] = []
    d["execution"]["threads"] = 2
    cfg = from_dict(d, tag)
    rd = out / f"{tag}_s{seed}"
    t0 = time.perf_counter()
    Run(cfg, rd, show_progress=False).run()
    wall = time.perf_counter() - t0
    rows = {r["method"]: r for r in read_json(rd / "results" / "val" / "ablation.json")["rows"]}
    classes = read_json(rd / "similarity.json")["classes"]
    clusters = read_json(rd / "selections.json")["clusters"]
    found = {c: g for g, m in enumerate(clusters) for c in m}
    ari = adjusted_rand_score([c.split("_")[0] for c in classes], [found[c] for c in classes])
    s = rows["S-1+A+F"]
    res = dict(tag=tag, seed=seed, wall=round(wall, 1), timings=read_json(rd / "timings.json"),
               A_gain_random=100 * (rows["Random+A+F"]["miou"] - rows["Random+F"]["miou"]),
               A_gain_s1=100 * (s["miou"] - rows["S-1+F"]["miou"]),
               vs_gradcam=[100 * s["diff"], 100 * s["ci_low"], 100 * s["ci_high"]],
               pxap_gain=100 * (s["pxap"] - rows["Grad-CAM"]["pxap"]), ari=ari,
               gcA_minus_s1=100 * (rows["Grad-CAM+A"]["miou"] - s["miou"]),
               miou={k: round(100 * r["miou"], 2) for k, r in rows.items()})
    ok = res["A_gain_random"] > 2 and res["A_gain_s1"] > 2 and s["ci_low"] > 0 and res["pxap_gain"] > 5 and ari >= 0.8 and res["gcA_minus_s1"] > 0
    res["claims_hold"] = bool(ok)
    print(json.dumps(res), flush=True)
    with open(out / "probe.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")
