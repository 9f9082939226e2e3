"""The project's own exceptions: user errors end in one line, sensor errors become nulls."""


class BenchError(Exception):
    """A problem the user can fix (bad option, missing file); the CLI prints one line, exit 2."""


class SensorError(Exception):
    """A sensor could not be read; the value becomes null with this message as the reason."""


class NoSensor(SensorError):
    """The sensor is absent on this machine (no driver, no library, no permission)."""
