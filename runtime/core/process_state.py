"""The states of an upstream model process, shared by the process layer and the pure scheduler."""

from __future__ import annotations

from enum import StrEnum


class ProcessState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    SHUTDOWN = "shutdown"  # terminal: the runtime is exiting

    @property
    def occupies_memory(self) -> bool:
        """True while a child process may be alive (anything but stopped/shutdown)."""
        return self is not _STOPPED and self is not _SHUTDOWN


# looked up once: reading a member off an enum class costs more than the test itself
_STOPPED = ProcessState.STOPPED
_SHUTDOWN = ProcessState.SHUTDOWN
