"""Earth Engine exports (being written)."""
import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True)


def run(args, cfg) -> int:
    raise NotImplementedError
