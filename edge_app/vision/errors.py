"""The vision package's errors. Each message names the file and the problem; the callers that
know which setting pointed at the file (the till, `agecheck estimate`) turn them into a
ConfigError naming that setting."""

from __future__ import annotations

from edge_app.errors import AgecheckError


class VisionError(AgecheckError):
    """A photo, a model file or its card that the vision code cannot use."""


class ImageError(VisionError, ValueError):
    """A photo that cannot be used, with a message naming the problem."""


class ModelError(VisionError):
    """The model file or its card cannot be used; the message names the file and the fix."""


class CropSizeError(VisionError):
    """The model takes crops of another size than the face code makes."""

    def __init__(self, crop_size: int, input_size: int, model_path: str) -> None:
        super().__init__(f"{crop_size} does not match the model's input size {input_size} ({model_path})")
        self.crop_size = crop_size
        self.input_size = input_size
