"""`uptrain run`: convert, evaluate, train, evaluate, report and push from one config, resumably
(uptrain.pipeline.run; stage manifests in uptrain.pipeline.manifest; the evaluation stages in
uptrain.pipeline.evaluation)."""

from uptrain.pipeline.compare import ComparisonOutcome, run_comparison
from uptrain.pipeline.run import RunOutcome, run_pipeline

__all__ = ["ComparisonOutcome", "RunOutcome", "run_comparison", "run_pipeline"]
