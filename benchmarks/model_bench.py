"""Model speed per clip: falv (bf16 / fp32) vs transformers' TimeSformer, against the bf16 matmul peak.

    python benchmarks/model_bench.py --preset base --repeats 3 --json results/model_bench.json

Same measurement as ``falv bench`` (both call :func:`falv.cli.bench.run_bench`);
figures and method are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from falv.cli.bench import format_bench, run_bench
from falv.config import ATTENTION_TYPES


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--attention", default="divided_space_time", choices=ATTENTION_TYPES)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-transformers", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    result = run_bench(args.preset, args.attention, args.batch, args.precision, args.repeats, args.warmup,
                       not args.no_transformers, args.device, args.threads,
                       log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_bench(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
