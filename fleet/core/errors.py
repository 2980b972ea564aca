"""The one exception tree of fleet.

::

    FleetError                      root; `retriable` says whether trying again can help
     +-- InputError                 bad input from the user or the repository (never retriable)
     |    +-- ValidationError        a repository problem with a path and a line
     |    +-- RenderError            a (bundle, cluster) pair could not be rendered
     |    +-- PlacementError         a (bundle, cluster) pair could not be placed (CEL at run time)
     +-- SourceError                git: unreachable, unknown revision, corrupt (retriable unless stated)
     +-- StateError                 the state database could not be read or written (`corrupt`: damaged)
     +-- ClusterError               talking to a cluster
          +-- Unreachable            connection refused, timeout, retries exhausted (retriable)
          +-- Conflict               field manager or ownership conflict (not retriable)
          +-- Rejected               the API server refused the object (4xx, not retriable)

Messages start with the object they are about (`Deployment/web/api: ...`). Library errors are mapped to
these at the edge that calls the library and chained with ``raise ... from e``. No message ever carries a
credential or Secret data.
"""

from __future__ import annotations


class FleetError(Exception):
    """Root of every error fleet raises on purpose."""

    retriable: bool = False


class InputError(FleetError):
    """Bad input: the user or the repository must change something."""


class ValidationError(InputError):
    """A problem in the repository at a path and line."""

    def __init__(self, message: str, *, path: str = "", line: int = 1) -> None:
        super().__init__(message)
        self.path = path
        self.line = line

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{self.path}:{self.line}: {msg}" if self.path else msg


class RenderError(InputError):
    """A bundle could not be rendered for a cluster."""


class PlacementError(InputError):
    """Placement could not be decided for a (bundle, cluster) pair."""


class SourceError(FleetError):
    """Reading the Git repository failed."""

    retriable = True


class StateError(FleetError):
    """The controller's state database could not be read or written (a full disk, an I/O error), or is
    damaged (`corrupt`: it must be set aside and rebuilt; it is a cache)."""

    retriable = True

    def __init__(self, message: str, *, corrupt: bool = False) -> None:
        super().__init__(message)
        self.corrupt = corrupt


class ClusterError(FleetError):
    """Talking to a cluster failed."""

    retriable = True


class Unreachable(ClusterError):
    """The cluster did not answer in time or refused the connection."""

    retriable = True


class Conflict(ClusterError):
    """Another field manager or another fleet instance owns what we want to write."""

    retriable = False


class Rejected(ClusterError):
    """The API server refused the request for a reason a retry cannot fix."""

    retriable = False
