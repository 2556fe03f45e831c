"""The uptraining config: one YAML file, validated into typed sections.

sections.py defines every setting once (type, default, documentation), with conversion.py (the
conversion, which `uptrain convert` shares) and evaluation.py (scoring a text, which `uptrain eval`
shares); schema.py turns YAML and `--set key=value` into those dataclasses strictly; load.py adds the
checks that types cannot say; reference.py writes docs/config.md from the same definitions.
"""

from uptrain.config.evaluation import (
    EvalCommand,
    EvalSettings,
    ReportSection,
    ScoringSection,
    TasksSection,
    TextSection,
)
from uptrain.config.load import MAX_SEED, MAX_THREADS, check_config, dump_config, load_config, parse_config
from uptrain.config.reference import config_reference_markdown
from uptrain.config.sections import (
    BUILTIN_PREFIX,
    BudgetSection,
    CheckpointSection,
    CompareSection,
    ConvertSection,
    DataSection,
    DistillSection,
    EvalSection,
    LoggingSection,
    LoraSection,
    MixSource,
    ModelSection,
    OptimSection,
    PushSection,
    TextSourceSection,
    TinyModelSection,
    TrainSection,
    UptrainConfig,
)

__all__ = [
    "BUILTIN_PREFIX",
    "MAX_SEED",
    "MAX_THREADS",
    "BudgetSection",
    "CheckpointSection",
    "ConvertSection",
    "DataSection",
    "DistillSection",
    "EvalCommand",
    "EvalSection",
    "EvalSettings",
    "LoggingSection",
    "MixSource",
    "ModelSection",
    "OptimSection",
    "CompareSection",
    "PushSection",
    "ReportSection",
    "ScoringSection",
    "TasksSection",
    "TextSection",
    "TextSourceSection",
    "TinyModelSection",
    "LoraSection",
    "TrainSection",
    "UptrainConfig",
    "check_config",
    "config_reference_markdown",
    "dump_config",
    "load_config",
    "parse_config",
]
