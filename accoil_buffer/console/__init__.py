"""The console: a web page on the sidecar at ``/console`` that shows delivery, what waits, what
was dropped, the messages arriving and what each became, and dead letters to replay."""

from accoil_buffer.console.app import Console
from accoil_buffer.console.live import Ring

__all__ = ["Console", "Ring"]
