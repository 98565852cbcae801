"""RESULTS.md tables from a fastnn.bench results.json, so they are never typed by hand.

    python -m fastnn.bench.render benchmarks/bench-results/results.json                 # print the tables
    python -m fastnn.bench.render benchmarks/bench-results/results.json --into benchmarks/RESULTS.md [--section cpu]

--into replaces the text between ``<!-- fastnn.bench:SECTION:begin -->`` and
``<!-- fastnn.bench:SECTION:end -->`` (appending the markers at the end the first time).
"""
import argparse
import json
import sys

from .report import markdown


def render_into(path, section, text):
    begin, end = f"<!-- fastnn.bench:{section}:begin -->", f"<!-- fastnn.bench:{section}:end -->"
    try:
        with open(path) as f:
            doc = f.read()
    except FileNotFoundError:
        doc = ""
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(doc)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastnn.bench.render")
    ap.add_argument("results")
    ap.add_argument("--into", help="a Markdown file whose marked section is replaced")
    ap.add_argument("--section", default="cpu")
    args = ap.parse_args(argv)
    with open(args.results) as f:
        doc = json.load(f)
    text = markdown(doc)
    if args.into:
        render_into(args.into, args.section, text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
