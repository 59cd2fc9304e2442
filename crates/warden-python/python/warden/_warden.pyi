"""Type stubs of the Rust extension module (re-exported by ``warden``)."""

from os import PathLike
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

JSON = Union[None, bool, int, float, str, List["JSON"], Dict[str, "JSON"]]
RequestLike = Union[Mapping[str, Any], str, bytes, bytearray]

KNOWN_DETECTORS: List[str]

class WardenError(Exception):
    """Base class of every error the warden package raises."""

class PolicyError(WardenError):
    """The policy could not be loaded."""

    origin: str
    diagnostics: Sequence[Tuple[int, int, str]]

class RequestError(WardenError):
    """The request is malformed; ``field`` names the offending field."""

    field: Optional[str]
    status: int  # set by Client only
    code: str  # set by Client only

class DecideError(WardenError):
    """No decision could be made; treat it as deny."""

class StoreError(WardenError):
    """The shared session store (Redis) could not be reached when the engine was built."""

class PolicyInfo:
    """Which policy decided."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> Optional[str]: ...
    @property
    def digest(self) -> str: ...

class Finding:
    """Where content was found (never what)."""

    @property
    def detector(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def key(self) -> bool: ...
    @property
    def family(self) -> Optional[str]: ...
    @property
    def score(self) -> Optional[float]: ...
    @property
    def families(self) -> List[str]: ...
    def to_dict(self) -> Dict[str, Any]: ...

class Decision:
    """The outcome of one request."""

    @property
    def verdict(self) -> str:
        """``"allow"`` or ``"deny"``."""
    @property
    def allowed(self) -> bool: ...
    @property
    def rule(self) -> Optional[str]: ...
    @property
    def reasons(self) -> List[str]: ...
    @property
    def warnings(self) -> List[str]: ...
    @property
    def taints(self) -> List[str]: ...
    @property
    def findings(self) -> List[Finding]: ...
    @property
    def redacted(self) -> JSON: ...
    @property
    def dry_run_decision(self) -> Optional[str]: ...
    @property
    def policy(self) -> PolicyInfo: ...
    def to_dict(self) -> Dict[str, Any]: ...
    @staticmethod
    def from_dict(value: Mapping[str, Any]) -> "Decision": ...
    def __bool__(self) -> bool: ...

class Engine:
    """A compiled policy deciding in-process, sessions in memory or a shared Redis; thread-safe."""

    @staticmethod
    def from_file(
        path: Union[str, "PathLike[str]"],
        *,
        redis_url: Optional[str] = None,
        redis_prefix: str = "warden",
        session_ttl: Optional[float] = None,
        tenant: Optional[str] = None,
    ) -> "Engine": ...
    @staticmethod
    def from_str(
        text: str,
        origin: str = "<string>",
        *,
        redis_url: Optional[str] = None,
        redis_prefix: str = "warden",
        session_ttl: Optional[float] = None,
        tenant: Optional[str] = None,
    ) -> "Engine": ...
    def decide(self, request: RequestLike) -> Decision: ...
    def decide_many(self, requests: Sequence[RequestLike]) -> List[Decision]: ...
    def scan(self, text: str) -> List[Finding]: ...
    def redact(self, value: JSON) -> JSON: ...
    def reload(self, path: Union[str, "PathLike[str]"]) -> None: ...
    @property
    def policy(self) -> PolicyInfo: ...

class Scanner:
    """Content detectors without a policy."""

    def __init__(
        self,
        detectors: Optional[Sequence[str]] = None,
        custom: Optional[Mapping[str, str]] = None,
        injection: bool = True,
        injection_threshold: Optional[float] = None,
    ) -> None: ...
    def scan(self, text: str) -> List[Finding]: ...
    def redact(self, value: JSON) -> JSON: ...
