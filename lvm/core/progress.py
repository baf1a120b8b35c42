"""Rich progress-bar columns shared by the commands that read media (tokenizing, building sentences)."""

from __future__ import annotations

from rich.progress import ProgressColumn
from rich.text import Text


class ImagesPerSecond(ProgressColumn):
    """Images encoded per second since the start (a task field, since videos hold many images)."""

    def render(self, task) -> Text:
        images, elapsed = task.fields.get("images", 0), task.elapsed or 0.0
        return Text(f"{images / elapsed:.1f} img/s" if elapsed > 0 else "– img/s", style="cyan")
