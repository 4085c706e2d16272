"""Certified contraction radii at the fixed points of the default architecture.

For each initialisation draw asked for and each of the default spec's four inputs: the point the
loop reaches from ``h0 = x`` (Picard, to 1e-14), its float ``ρ(J)`` and ``‖J‖₂``, and
``dy.check_contraction(system, dy.Domain.ball(h*, r))`` with ``r`` = 1e-9: the fixed point proven
near ``h*`` (Krawczyk, arb ball arithmetic) and the largest radius around it proven to lie in a
region the map sends into itself and contracts on. Written to ``--json`` for docs/proofs.md.

    python docs/scripts/local_radius.py --draws 0 --json docs/data/local_radius.json

About four to six minutes a point on one core (512 state entries).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

import dynamo as dy
import verify
from verify import build_model, draw_inputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, nargs="+", default=[0])
    ap.add_argument("--radius", type=float, default=1e-9)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = verify.default_spec()
    rows = []
    t_all = time.perf_counter()
    for draw in args.draws:
        model = build_model(spec, draw)
        x = draw_inputs(spec, model, torch.float64)
        system = dy.LoopedSystem.from_module(model, x)
        for i in range(x.shape[0]):
            one = system.with_input(x[i : i + 1])
            sol = dy.solve(
                one,
                x[i : i + 1],
                method="picard",
                max_steps=5000,
                tol=1e-14,
                atol=1e-14,
                throw=False,
            )
            row: dict[str, object] = {"draw": draw, "input": i, "converged": sol.all_converged}
            if not sol.all_converged:
                rows.append(row)
                print(row, flush=True)
                continue
            h = sol.state[0]
            n = h.numel()
            J = dy.jacobian(one, h[None])[0].reshape(n, n)
            row["rho"] = float(torch.linalg.eigvals(J).abs().max())
            row["norm2"] = float(torch.linalg.matrix_norm(J, ord=2))
            t0 = time.perf_counter()
            v = dy.check_contraction(one, dy.Domain.ball(h, args.radius), n_samples=8)
            row["seconds"] = time.perf_counter() - t0
            row["verdict"] = str(v.verdict)
            row["certified_radius"] = v.certified_radius
            for e in v.evidence:
                if e.kind == "certified contraction radius":
                    row["rate"] = e.details["rate"]
                    row["norm"] = e.details["norm"]
                if e.kind == "fixed point near the centre":
                    row["proof_radius"] = e.details["proof_radius"]
                    row["error_bound"] = e.value
            rows.append(row)
            print(row, flush=True)
    out = {
        "command": "python docs/scripts/local_radius.py --draws "
        + " ".join(map(str, args.draws))
        + f" --json {args.json}",
        "radius": args.radius,
        "state_entries": 8 * 64,
        "seconds_total": time.perf_counter() - t_all,
        "machine": f"{platform.machine()}, one thread",
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1, allow_nan=False, default=_plain) + "\n")


def _plain(v: object) -> object:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)


if __name__ == "__main__":
    main()
