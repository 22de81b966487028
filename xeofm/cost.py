"""Turning a :class:`~xeofm.plan.Plan` into device-hours and money.

A plan counts chips and FLOPs exactly (from the cube's layout and one
fake-tensor trace of the model). How many chips per second a device runs is
*not* something the plan can know: it is measured (e.g. with
``benchmarks/bench_engine.py`` on the target machine) or assumed. This module
keeps that distinction explicit: every :class:`Estimate` says where its
throughput came from.

>>> from xeofm.cost import estimate
>>> est = estimate(1_000_000, chips_per_second=250.0, price_per_gpu_hour=2.0)   # doctest: +SKIP
>>> round(est.gpu_hours, 2), round(est.cost, 2)                                # doctest: +SKIP
(1.11, 2.22)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Estimate", "estimate"]


@dataclass(frozen=True)
class Estimate:
    """Device time and cost of running a plan.

    Attributes
    ----------
    chips
        Chips the job runs (halos included, as :class:`~xeofm.plan.Plan` counts them).
    flops_total
        FLOPs of all chips, when the model could be traced.
    chips_per_second
        Throughput of one device used for the estimate.
    throughput_source
        Where ``chips_per_second`` comes from (measured, assumed, or derived
        from an assumed effective TFLOP/s).
    devices
        Devices running in parallel.
    device_hours
        ``chips / chips_per_second / 3600`` (summed over devices).
    wall_hours
        ``device_hours / devices`` (perfect scaling; I/O-bound jobs scale worse).
    price_per_device_hour, cost
        Assumed price and the resulting cost (``None`` without a price).
    """

    chips: int
    flops_total: float | None
    chips_per_second: float
    throughput_source: str
    devices: int
    device_hours: float
    wall_hours: float
    price_per_device_hour: float | None
    cost: float | None

    @property
    def gpu_hours(self) -> float:
        """Alias of :attr:`device_hours`."""
        return self.device_hours

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)

    def __repr__(self) -> str:
        rows = [
            ("chips", f"{self.chips:,}"),
            ("FLOPs", "unknown" if self.flops_total is None else f"{self.flops_total:.3e}"),
            ("throughput", f"{self.chips_per_second:,.1f} chips/s per device ({self.throughput_source})"),
            ("device time", _hours(self.device_hours)),
            ("wall time", f"{_hours(self.wall_hours)} on {self.devices} device(s)"),
        ]
        if self.cost is not None:
            rows.append(("cost", f"{self.cost:,.2f} at {self.price_per_device_hour:g} per device-hour (assumed price)"))
        w = max(len(k) for k, _ in rows)
        return "Estimate\n" + "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


def _hours(h: float) -> str:
    if h >= 10:
        return f"{h:,.0f} h"
    if h >= 0.1:
        return f"{h:.2f} h"
    return f"{h * 3600:.3g} s"


def estimate(
    plan: Any,
    *,
    chips_per_second: float | None = None,
    effective_tflops: float | None = None,
    devices: int = 1,
    price_per_device_hour: float | None = None,
    source: str | None = None,
) -> Estimate:
    """Device-hours (and cost) of a plan, given a throughput.

    Parameters
    ----------
    plan
        A :class:`~xeofm.plan.Plan` (or a number of chips).
    chips_per_second
        Chips per second of one device, measured or assumed.
    effective_tflops
        Alternative to ``chips_per_second``: sustained TFLOP/s of one device
        on this model (peak x utilisation); the throughput is then
        ``effective_tflops * 1e12 / flops_per_chip``. Needs a plan whose FLOPs
        are known.
    devices
        Devices working in parallel.
    price_per_device_hour
        Price of one device-hour, for the cost.
    source
        Text saying where the throughput comes from (default: "assumed").

    Returns
    -------
    Estimate

    Raises
    ------
    ValueError
        Without a usable throughput.
    """
    chips = int(getattr(plan, "chips_total", plan))
    flops_total = getattr(plan, "flops_total", None)
    flops_chip = getattr(plan, "flops_per_chip", None)
    if chips_per_second is None:
        if effective_tflops is None:
            raise ValueError("give chips_per_second (measured or assumed) or effective_tflops")
        if not flops_chip:
            raise ValueError("effective_tflops needs the model's FLOPs per chip, which the plan does not know")
        chips_per_second = effective_tflops * 1e12 / float(flops_chip)
        src = source or f"derived from an assumed {effective_tflops:g} effective TFLOP/s"
    else:
        src = source or "assumed"
    if chips_per_second <= 0 or devices < 1:
        raise ValueError("chips_per_second must be > 0 and devices >= 1")
    hours = chips / float(chips_per_second) / 3600.0
    cost = None if price_per_device_hour is None else hours * float(price_per_device_hour)
    return Estimate(
        chips=chips, flops_total=flops_total, chips_per_second=float(chips_per_second), throughput_source=src,
        devices=int(devices), device_hours=hours, wall_hours=hours / devices,
        price_per_device_hour=price_per_device_hour, cost=cost,
    )
