"""``edgekit doctor``: what this machine offers for inference, and where a model's nodes run."""

from __future__ import annotations

from edgekit.doctor import machine as _machine
from edgekit.doctor import model as _model
from edgekit.doctor import report as _report
from edgekit.doctor.machine import *  # noqa: F403
from edgekit.doctor.model import *  # noqa: F403
from edgekit.doctor.report import *  # noqa: F403

__all__ = [*_machine.__all__, *_model.__all__, *_report.__all__]
