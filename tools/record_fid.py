"""Record FID reference values for foil-metrics' parity test.

Features are random (seeded), small, and saved beside the value pytorch-fid 0.3.0's
calculate_frechet_distance (scipy.linalg.sqrtm) gives for their numpy Gaussian fits.

Usage: tools/.venv/bin/python tools/record_fid.py
Writes crates/foil-metrics/tests/fixtures/fid.json (committed).
"""
import json
import pathlib

import numpy as np
from pytorch_fid.fid_score import calculate_frechet_distance

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/foil-metrics/tests/fixtures"
OUT.mkdir(parents=True, exist_ok=True)


def case(rng, n1, n2, d, shift, scale):
    a = rng.standard_normal((n1, d)).astype(np.float32)
    # Correlated, shifted and scaled second set, so the cross term matters.
    mix = rng.standard_normal((d, d)).astype(np.float32) * 0.3 + np.eye(d, dtype=np.float32)
    b = (rng.standard_normal((n2, d)).astype(np.float32) @ mix) * scale + shift
    b = b.astype(np.float32)
    mu1, s1 = np.mean(a.astype(np.float64), axis=0), np.cov(a.astype(np.float64), rowvar=False)
    mu2, s2 = np.mean(b.astype(np.float64), axis=0), np.cov(b.astype(np.float64), rowvar=False)
    fid = float(calculate_frechet_distance(mu1, s1, mu2, s2))
    return dict(n1=n1, n2=n2, d=d, a=a.flatten().tolist(), b=b.flatten().tolist(), fid=fid)


rng = np.random.default_rng(0)
cases = [case(rng, 40, 50, 8, 0.5, 1.3), case(rng, 64, 64, 16, -0.2, 0.7), case(rng, 30, 25, 4, 2.0, 1.0)]
path = OUT / "fid.json"
path.write_text(json.dumps(dict(cases=cases)))
print("wrote", path, path.stat().st_size, "bytes", [c["fid"] for c in cases])
