"""`acai-omr worker`: take transcription jobs from Redis (RQ) until stopped; run one per CPU budget, on any machine."""

from __future__ import annotations

import argparse
import os
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "worker", help="Transcribe jobs queued by the web app (Redis Queue worker)",
        description="Load the model once, then take transcription jobs from the Redis queue the web app "
                    "(started with --redis-url / $ACAI_REDIS_URL) fills. Start as many as the machines allow.",
    )
    parser.add_argument("--redis-url", default=os.environ.get("ACAI_REDIS_URL", ""), metavar="URL",
                        help="redis://host:port/db (default: $ACAI_REDIS_URL)")
    parser.add_argument("--queue", default="acai-omr", help="queue name (the web app's queue_name)")
    parser.add_argument("--weights", default=os.environ.get("ACAI_WEIGHTS_DIR") or None, metavar="DIR",
                        help="weights folder (default: $ACAI_WEIGHTS_DIR, else the repository's weights/)")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    parser.add_argument("--int8", action="store_true",
                        help="int8 linear layers on CPU: changes the output, no faster once batched (see README, inference speed)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the decoder step: identical output, measured 1.1x faster in two "
                             "bench runs and 1.2x slower in a third, after about a minute of compiling at start-up "
                             "(needs a C++ compiler; falls back to eager)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.redis_url:
        print("error: give --redis-url (or set ACAI_REDIS_URL)", file=sys.stderr)
        return 2
    from acai_omr.inference.queue import run_worker
    from acai_omr.model.weights import WeightsError

    try:
        run_worker(args.redis_url, args.queue, args.weights, burst=args.burst, device=args.device,
                   torch_threads=args.threads, int8=args.int8, compile=args.compile)
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
