"""`lsr train CONFIG.yaml [section.key=value ...]`: train a sparse encoder."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a SPLADE, uniCOIL or inference-free encoder from a YAML config",
        description="Train as CONFIG says; section.key=value arguments override it "
                    "(e.g. training.max_steps=100 regularizer.document_weight=0.01). The resolved config, "
                    "logs (train_log.jsonl), checkpoints and models go to training.output_dir.",
    )
    parser.add_argument("config", metavar="CONFIG", help="YAML experiment config")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue the run from its latest checkpoint (or from CHECKPOINT)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from lsr.training.config import load_config
    from lsr.training.run import run_training

    config = load_config(args.config, args.overrides)
    summary = run_training(config, args.resume)
    best = summary["best"]
    if best:
        print(f"best dev nDCG@10 {best['metrics']['nDCG@10']:.4f} at step {best['step']}: {best['model']}")
    print(f"final model: {summary['final_model']}")
    return 0
