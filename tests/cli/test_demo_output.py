"""What the demo prints, without running it: the table's legend and lines kept whole off a terminal."""

from __future__ import annotations

import io
import shutil

from gpuproof.cli.demo import ROLES, Demo, demo_console


def test_the_demo_table_explains_the_bracketed_lower_bound():  # "[0.81]" was never explained (issue 14)
    out = io.StringIO()
    console = demo_console(out)
    demo = Demo(10, 1, console, live=False)
    try:
        row = {"role": ROLES[0], "claimed": "cpu-reference", "verified": "cpu-reference", "verdicts": [],
               "trust": {"score": 0.92, "lower_bound": 0.81}, "training": None, "last": None}
        console.print(demo.table([row], "gpuproof demo"))
    finally:
        shutil.rmtree(demo.tmp, ignore_errors=True)
    text = out.getvalue()
    assert "score [lower]" in text and "0.92 [0.81]" in text  # the header was cut to "score" by rich markup
    assert "in brackets, its 95% lower bound" in " ".join(text.split())


def test_progress_lines_are_not_wrapped_mid_phrase_off_a_terminal():
    out = io.StringIO()  # not a terminal, like a log file or CI
    line = "[ 10 s] " + "; ".join(f"provider-{i}: 0.67 [0.22] pass (consistent)" for i in range(8))
    demo_console(out).print(line)
    assert out.getvalue() == line + "\n"
