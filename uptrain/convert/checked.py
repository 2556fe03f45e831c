"""A conversion's settings checked once, at the door: `check_conversion(settings)` returns the
CheckedConversion that convert_checkpoint and everything under it trust without checking again
(`uptrain convert` and `uptrain run` check at their door and pass it in)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from uptrain.checkpoint.devices import resolve_device
from uptrain.checkpoint.dtypes import DTYPES
from uptrain.config.conversion import ConvertSection
from uptrain.config.load import MAX_SEED
from uptrain.config.methods import ComposedMethod, Refine
from uptrain.convert.calibrated import calibration_of, refine_precision
from uptrain.convert.calibration import CalibrationSpec
from uptrain.convert.methods import ConversionMethod, build_method
from uptrain.convert.mla.settings import check_mla_settings
from uptrain.errors import SettingError


@dataclass(frozen=True)
class CheckedConversion:
    """ConvertSection with everything that needs no source checked, and what follows from it."""

    settings: ConvertSection
    steps: ComposedMethod  # the method's steps and options (refine's precision resolved)
    method: ConversionMethod  # what the streaming loop runs
    calibration: CalibrationSpec | None  # the calibration pass a calibrated method asks for

    @property
    def groups(self) -> int:
        assert self.settings.groups is not None  # checked
        return self.settings.groups


def check_conversion(settings: ConvertSection | CheckedConversion) -> CheckedConversion:
    """The settings that need no source, checked before anything is read (one-line SettingError);
    a CheckedConversion is returned as it is."""
    if isinstance(settings, CheckedConversion):
        return settings
    if settings.target == "mla":
        return _checked_mla(settings)
    if settings.groups is None:
        raise SettingError("<groups> is required; set the number of KV heads to keep")
    if settings.dtype is not None and settings.dtype not in DTYPES:
        raise SettingError(f"<dtype> {settings.dtype!r} is not one of {', '.join(DTYPES)}")
    if not 0 <= settings.seed <= MAX_SEED:
        raise SettingError(f"<seed> {settings.seed} must be between 0 and {MAX_SEED}")
    device = resolve_device(settings.device)  # a GPU this machine lacks is an error before anything is read
    steps = settings.composed_method()
    steps.check()
    refine: Refine | None = steps.find(Refine)
    if refine is not None:  # auto: what this device runs fastest, recorded as resolved
        precision = refine_precision(refine.precision, device)
        steps = steps.replace(dataclasses.replace(refine, precision=precision))
    calibration = calibration_of(settings, steps, device)  # checks the calibration numbers
    return CheckedConversion(settings, steps, build_method(steps), calibration)


def _checked_mla(settings: ConvertSection) -> CheckedConversion:
    """`--target mla`: its own settings (mla/settings.py) and calibration; the GQA method stays mean,
    unused."""
    if settings.dtype is not None and settings.dtype not in DTYPES:
        raise SettingError(f"<dtype> {settings.dtype!r} is not one of {', '.join(DTYPES)}")
    calibration = check_mla_settings(settings, resolve_device(settings.device))
    steps = settings.composed_method()
    return CheckedConversion(settings, steps, build_method(steps), calibration)
