"""Which attempt fails and how: scripted sequences first, then seeded random draws.

A script maps a marker (any substring of the raw request body, e.g. a custom id
placed in the user message) to the steps its successive attempts play. Attempts
are counted per distinct body (hash of the canonical JSON), so two rows sharing a
marker each get the whole script. Everything else draws from the configured rates
with one seeded RNG, as does latency jitter. Files/Batches API calls get their own
plan, `ApiFaults`, by operation (upload, retrieve, ...): scripted steps first, then
seeded draws from per-operation rates.

    >>> plan = FaultPlan(SimConfig(fail_first={"row-7": [429, 503]}))
    >>> [plan.next_step(b'{"x": "row-7"}', {"x": "row-7"}) for _ in range(3)]
    [429, 503, None]
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable
from typing import Any

import orjson

from batchrun.sim.config import (
    ApiStep,
    BatchConfig,
    ScriptStep,
    SimConfig,
    check_api_step,
    check_operation,
    check_step,
)


class FaultPlan:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self._scripts: dict[str, tuple[ScriptStep, ...]] = {
            marker: tuple(steps) for marker, steps in config.fail_first.items()
        }
        self._marker_bytes: dict[str, bytes] = {m: m.encode() for m in self._scripts}
        self._attempts: dict[tuple[str, bytes], int] = {}

    def script(self, marker: str, steps: Iterable[ScriptStep]) -> None:
        """Add (or replace) the steps played for bodies containing `marker`."""
        self._scripts[marker] = tuple(check_step(step) for step in steps)
        self._marker_bytes[marker] = marker.encode()
        self._attempts = {k: v for k, v in self._attempts.items() if k[0] != marker}

    def reset(self) -> None:
        """Forget attempt counts (scripts stay) and reseed the RNG."""
        self._attempts.clear()
        self.rng.seed(self.config.seed)

    def next_step(self, raw: bytes, body: dict[str, Any]) -> ScriptStep | None:
        """The scripted or drawn fault for this attempt; None means answer normally."""
        scripted = self.scripted_step(raw, body)
        if scripted is not None:
            return scripted[0]
        rates = self.config.error_rates
        if rates:
            draw = self.rng.random()
            for status, probability in rates.items():
                if draw < probability:
                    return status
                draw -= probability
        return None

    def scripted_step(self, raw: bytes, body: dict[str, Any]) -> tuple[ScriptStep | None] | None:
        """The scripted step for this attempt, boxed; None when no script matches.

        Batch rows use this alone: a row whose body carries a marker plays the script
        like an online attempt (and counts as one), but online error rates do not apply.
        """
        for marker, steps in self._scripts.items():
            needle = self._marker_bytes[marker]
            if needle in raw or (not marker.isascii() and needle in orjson.dumps(body)):
                key = (marker, _body_hash(body))
                attempt = self._attempts.get(key, 0)
                self._attempts[key] = attempt + 1
                if attempt < len(steps):
                    step = steps[attempt]
                    return (None if step in (200, "ok") else step,)
                return (None,)
        return None

    @property
    def has_scripts(self) -> bool:
        return bool(self._scripts)

    def stream_fault(self) -> str | None:
        """'truncate', 'stream_error' or None for one stream, by the configured rates."""
        config = self.config
        if not (config.truncate_rate or config.stream_error_rate):
            return None
        draw = self.rng.random()
        if draw < config.truncate_rate:
            return "truncate"
        if draw < config.truncate_rate + config.stream_error_rate:
            return "stream_error"
        return None

    def latency(self) -> float:
        """Seconds to wait before answering: mean plus seeded jitter, never negative."""
        mean = self.config.latency_ms / 1000
        spread = self.config.jitter_ms / 1000
        if spread <= 0:
            return max(0.0, mean)
        if self.config.jitter == "lognormal" and mean > 0:
            sigma2 = math.log(1 + (spread / mean) ** 2)
            return self.rng.lognormvariate(math.log(mean) - sigma2 / 2, math.sqrt(sigma2))
        return max(0.0, mean + self.rng.uniform(-spread, spread))


def _body_hash(body: dict[str, Any]) -> bytes:
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=16).digest()


class ApiFaults:
    """Faults for Files/Batches API calls, per operation: scripts first, then rates.

    A script plays its steps on the operation's successive calls (whatever the file
    or batch id), then the operation's rates apply. None means answer normally.

        >>> faults = ApiFaults(BatchConfig(scripts={"retrieve": [503, "hang"]}))
        >>> [faults.next_step("retrieve") for _ in range(3)], faults.next_step("upload")
        ([503, 'hang', None], None)
    """

    def __init__(self, config: BatchConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.rng = random.Random(f"api-faults-{seed}")
        self._scripts: dict[str, tuple[ApiStep, ...]] = {
            operation: tuple(steps) for operation, steps in config.scripts.items()
        }
        self._calls: dict[str, int] = {}

    def script(self, operation: str, steps: Iterable[ApiStep]) -> None:
        """Play `steps` on the next calls of `operation` (replacing its script)."""
        self._scripts[check_operation(operation)] = tuple(check_api_step(step) for step in steps)
        self._calls[operation] = 0

    def reset(self) -> None:
        """Replay scripts from their first step and reseed the RNG."""
        self._calls.clear()
        self.rng.seed(f"api-faults-{self.seed}")

    def next_step(self, operation: str) -> ApiStep | None:
        steps = self._scripts.get(operation)
        if steps:
            call = self._calls.get(operation, 0)
            self._calls[operation] = call + 1
            if call < len(steps):
                step = steps[call]
                return None if step in (200, "ok") else step
        rates = self.config.faults.get(operation)
        if rates:
            draw = self.rng.random()
            for step, probability in rates.items():
                if draw < probability:
                    return None if step in (200, "ok") else step
                draw -= probability
        return None
