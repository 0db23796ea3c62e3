"""The faithfulness benchmark: our methods against Captum's and LIT's built-ins on the same
snippets (``python -m captum_erasure.benchmark``). The only part of the package that may
import :mod:`lit_plugin`."""

from captum_erasure.benchmark.run import (
                                          FULL,
                                          QUICK,
                                          BenchmarkResult,
                                          BenchmarkSettings,
                                          main,
                                          run_benchmark,
)

__all__ = ["BenchmarkSettings", "BenchmarkResult", "FULL", "QUICK", "run_benchmark", "main"]
