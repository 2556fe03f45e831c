"""The one exception family that users see. Its message is a single line that names the fix."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping


class UptrainError(Exception):
    """A user-facing error: the CLI prints `error: <message>` and exits with `exit_code`."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(" ".join(message.split()))  # always one line
        if exit_code is not None:
            self.exit_code = exit_code


_MARK = re.compile(r"<([a-z][a-z0-9_]*)>")


class SettingError(UptrainError):
    """A mistake in a setting, raised by the library with the setting's field name written `<field>`
    in the message (e.g. "<groups> 3 must divide ..."). Each front end says the name its own way in
    one place: the CLI as a flag (`--groups`), a run config as a key (`model.convert.groups`).
    `renamed` maps fields to the names the caller's schema uses (eval's `dataset` is calibration's
    `calibration_data`). Plain str() shows the bare field names."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        self.template = " ".join(message.split())
        self.fields = _MARK.findall(self.template)
        super().__init__(self.said(str), exit_code)

    def said(self, name: Callable[[str], str]) -> str:
        """The message with every `<field>` written as name(field)."""
        return _MARK.sub(lambda m: name(m.group(1)), self.template)

    def renamed(self, fields: Mapping[str, str]) -> SettingError:
        """The same mistake with fields renamed (those not in `fields` stay)."""
        error = SettingError(_MARK.sub(lambda m: f"<{fields.get(m.group(1), m.group(1))}>", self.template))
        error.exit_code = self.exit_code
        return error


def as_flag(field: str) -> str:
    """A field as the CLI spells its option: calibration_data -> --calibration-data."""
    return "--" + field.replace("_", "-")
