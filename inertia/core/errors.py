"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class InertiaError(Exception):
    """A mistake in what the user asked for (bad config, unknown plugin, impossible setting)."""


class ConfigError(InertiaError):
    """A configuration value is not allowed; the message names the field and what is allowed."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class NonFiniteLatentsError(InertiaError):
    """Latents became NaN or Inf; raised at the step where it first happened."""


class DecodedShapeError(InertiaError):
    """A backbone decoded a video of another frame count or size than the run asked for (e.g. a VAE's tiled decode
    whose tiles do not fit the frames); raised before anything is written."""


class WriteFault(InertiaError):
    """A result could not be written (disk full, quota, read-only or failing disk): a fault of the machine,
    not of the input (exit 3). Nothing half-written is left; once space is freed, the same command resumes."""


def one_line(error: BaseException | str) -> str:
    """The message on one line even where it quotes a name or path holding a line break."""
    return str(error).replace("\r", "\\r").replace("\n", "\\n")
