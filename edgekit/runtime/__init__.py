"""The device runtime: numpy + onnxruntime (OpenVINO optional, imported when it runs a model)."""

from __future__ import annotations

from edgekit.runtime import engines as _engines
from edgekit.runtime import model as _model
from edgekit.runtime import predict as _predict
from edgekit.runtime import session as _session
from edgekit.runtime import specs as _specs
from edgekit.runtime.engines import *  # noqa: F403
from edgekit.runtime.model import *  # noqa: F403
from edgekit.runtime.predict import *  # noqa: F403
from edgekit.runtime.session import *  # noqa: F403
from edgekit.runtime.specs import *  # noqa: F403

__all__ = list(dict.fromkeys([  # model.py re-exports some session/spec names
    *_engines.__all__, *_model.__all__, *_predict.__all__, *_session.__all__, *_specs.__all__]))
