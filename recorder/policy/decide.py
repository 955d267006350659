"""What the configuration decides for one finished call: its direction, its queue, the recording
rule that matches, and whether any audio may be kept (GDPR: what the rules do not select is never
written, not even sealed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callrec.capture.model.calls import CapturedCall
from callrec.recorder.config import Config
from callrec.recorder.policy.direction import call_addresses, classify
from callrec.recorder.policy.facts import call_codecs, facts_from_call
from callrec.recorder.policy.rules import Decision


@dataclass(frozen=True, slots=True)
class CallDecision:
    direction: str
    queue: str | None
    decision: Decision

    @property
    def blocked(self) -> str | None:
        """Why no audio of this call may be kept, or ``None`` when it may be recorded (on-demand starts,
        pauses and consent then decide which part: :mod:`recorder.policy.modes`)."""
        return self.decision.discard or None


def decide_call(call: CapturedCall, config: Config) -> CallDecision:
    """Direction, queue and the matching rule's decision for ``call``."""
    caller_address, callee_address = call_addresses(call)
    direction = classify(
        config.direction,
        caller=call.caller,
        callee=call.callee,
        caller_address=caller_address,
        callee_address=callee_address,
    )
    queue = call.sip_headers.get(config.queue_header)
    facts = facts_from_call(call, direction, queue, call_codecs(call))
    return CallDecision(direction, queue, config.rules.decide(facts))


def keep_channels(samples: npt.NDArray[np.int16], channels: str) -> npt.NDArray[np.int16]:
    """Silence the side a rule does not record (``caller``: keep left only; ``callee``: right only)."""
    if channels == "both" or samples.ndim != 2 or samples.shape[1] != 2:
        return samples
    kept = np.zeros_like(samples)
    side = 0 if channels == "caller" else 1
    kept[:, side] = samples[:, side]
    return kept
