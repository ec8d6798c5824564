"""The integer datapath a quantised network was lowered to (docs/fixed_point.md gives the rules).

A quantised network carries its own copy so that simulators and backends need no profile file.
Defaults are Loihi 2 as modelled by Lava 0.10.0's bit-accurate LIF and Dense processes.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Datapath:
    """Widths, shifts and overflow rules of a fixed-point neuro core.

    Per step, for every projection into a population::

        acc  = sum_j w[i, j] * payload[j]                        (exact integer)
        acc  = wrap_{conv_acc_bits}(acc)                         (Conv2d only, when conv_acc_bits > 0)
        a    = acc << weight_exp   (or >> -weight_exp, floor)    (per projection)
    and for the population (IF family, Lava LIF order)::

        u    = wrap_{current_bits}( decay_u(u) + (sum a) << act_shift )
        v    = sat_{state_bits}( decay_v(v) + u + bias )        (saturate or wrap)
        fire = v CMP threshold

    The IR stores ``bias`` and ``threshold`` already in state units: on the chip they are
    ``bias_mant << bias_exp`` and ``vth_mant << vth_shift``; the quantiser guarantees that split
    exists and the Lava exporter performs it.

    ``weight_bits`` counts the mantissa bits including sign. ``weight_step`` is the weight
    granularity after the profile's truncation (Lava's mixed-sign 8-bit weights are even: step 2).
    ``synapse_delay`` is the pipeline latency in steps each projection adds (Lava Dense: 1).
    """

    profile: str = "loihi2"
    weight_bits: int = 9           # signed range [-256, 255] before truncation
    weight_step: int = 2           # Lava truncates mixed-sign 8-bit weights to even values
    weight_exp_min: int = -8
    weight_exp_max: int = 7
    act_shift: int = 6
    vth_shift: int = 6
    threshold_bits: int = 17       # unsigned mantissa
    bias_bits: int = 13            # signed mantissa
    bias_exp_min: int = 0
    bias_exp_max: int = 7
    state_bits: int = 24           # v
    state_overflow: str = "saturate"
    current_bits: int = 24         # u
    current_overflow: str = "wrap"
    decay_bits: int = 12
    payload_bits: int = 24         # largest graded payload
    synapse_delay: int = 1
    input_bits: int = 8            # graded payload bits of an analog input
    conv_acc_bits: int = 24        # Conv2d sums wrap modulo 2^b into [-2^(b-1), 2^(b-1)) before weight_exp
                                   # (Lava PyConvModelFixed signed_clamp); 0 = exact, never wraps

    def validate(self) -> None:
        for name in ("weight_bits", "threshold_bits", "bias_bits", "state_bits", "current_bits", "payload_bits", "input_bits"):
            v = getattr(self, name)
            if not 1 <= v <= 64:
                raise ValueError(f"datapath {self.profile!r}: {name} = {v} outside 1..64")
        for name in ("state_overflow", "current_overflow"):
            if getattr(self, name) not in ("saturate", "wrap"):
                raise ValueError(f"datapath {self.profile!r}: {name} = {getattr(self, name)!r} must be 'saturate' or 'wrap'")
        if self.weight_exp_min > self.weight_exp_max:
            raise ValueError(f"datapath {self.profile!r}: weight_exp_min {self.weight_exp_min} > weight_exp_max {self.weight_exp_max}")
        if not 0 <= self.conv_acc_bits <= 64:
            raise ValueError(f"datapath {self.profile!r}: conv_acc_bits = {self.conv_acc_bits} outside 0..64 (0: no wrap)")
        if self.weight_step < 1 or self.synapse_delay < 0:
            raise ValueError(f"datapath {self.profile!r}: weight_step must be >= 1 and synapse_delay >= 0")

    @property
    def weight_max(self) -> int:
        """Largest representable weight mantissa after truncation."""
        top = 2 ** (self.weight_bits - 1) - 1
        return top - (top % self.weight_step)

    @property
    def weight_min(self) -> int:
        return -(2 ** (self.weight_bits - 1))

    @property
    def threshold_max(self) -> int:
        return 2 ** self.threshold_bits - 1

    @property
    def bias_max(self) -> int:
        return 2 ** (self.bias_bits - 1) - 1

    @property
    def state_max(self) -> int:
        """Voltage saturates to [-(2^(b-1)) + 1, 2^(b-1) - 1] (Lava LIF)."""
        return 2 ** (self.state_bits - 1) - 1
