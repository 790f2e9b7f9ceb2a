"""Evaluation: score restorers on a seeded test set and write a comparison report.

    from mmrface.evaluation import BicubicBaseline, ModelMethod, OutputsMethod, evaluate, write_report

    result = evaluate("testsets/gfpgan", [BicubicBaseline(), ModelMethod("small", weights="mmrface-small")],
                      metrics=["psnr", "ssim", "lpips"])
    write_report(result, "results/eval", command="...")   # report.json, report.md, report.png

`methods.py` states how each method turns an LQ face into an image scored against the HQ one,
`runner.py` how metrics are computed and aggregated (n/a with a reason, never a crash), and
`report.py` / `figure.py` what the files contain. The CLI is `mmrface evaluate`.
"""

from mmrface.evaluation.methods import BASELINE, BicubicBaseline, Method, ModelMethod, OutputsMethod
from mmrface.evaluation.report import markdown_table, write_report
from mmrface.evaluation.runner import DEFAULT_METRICS, Evaluation, evaluate, open_testset

__all__ = ["BASELINE", "DEFAULT_METRICS", "BicubicBaseline", "Evaluation", "Method", "ModelMethod",
           "OutputsMethod", "evaluate", "markdown_table", "open_testset", "write_report"]
