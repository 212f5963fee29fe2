"""``ssm-spark point``: the command (its arguments are declared in :mod:`ssm_spark.cli`) (text or JSON; exit 2 on a point that cannot be answered)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from ssm_spark.point.errors import PointError
from ssm_spark.point.service import PointService

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.config import Config

__all__ = ["run"]


def _text(ans: dict) -> str:
    c = ans["cell"]
    lines = [f"{ans['date']}  lat {ans['lat']}, lon {ans['lon']}  ({c['grid']} row {c['row']}, col {c['col']})",
             f"  ssm      {ans['ssm']:.4f} m3/m3  [p05 {ans['ssm_p05']:.4f}, p95 {ans['ssm_p95']:.4f}]"
             if ans["ssm"] is not None else "  ssm      none",
             f"  qc       {ans['qc']} {' | '.join(ans['qc_flags']) or '(no bit set)'}",
             f"  env      {ans['env']}  model {ans['model_id']}",
             f"  source   {ans['source']}: {ans['file']}  ({ans['elapsed_ms']:.1f} ms)"]
    if ans.get("features"):
        lines.append("  features " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in ans["features"].items()))
    return "\n".join(lines)


def run(args: argparse.Namespace, cfg: "Config") -> int:
    """``ssm-spark point``: prints the answer (text, or JSON with ``--json``); 0, or 2 on a point that
    cannot be answered (the message says why)."""
    if args.source is None and args.stacks is None:
        raise PointError("point: give --source ee|PATH or --stacks PATH")
    svc = PointService(cfg, args.models, args.stacks, static=args.static, source=args.source,
                       climatology=args.climatology)
    if args.end:
        res = svc.series(args.lat, args.lon, args.date, args.end)
        if args.json:
            print(json.dumps(res, indent=2))
        else:
            for p in res["points"]:
                print(_text(p))
            for s in res["skipped"]:
                print(f"{s['date']}  skipped: {s['reason']}")
        return 0
    ans = svc.point(args.lat, args.lon, args.date)
    print(json.dumps(ans, indent=2) if args.json else _text(ans))
    return 0
