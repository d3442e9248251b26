"""The one input pipeline: tensor specs, reading (files, data folders, images), preparation,
datasets, synthetic data."""

from __future__ import annotations

from edgekit.inputs import data as _data
from edgekit.inputs import datasets as _datasets
from edgekit.inputs import folders as _folders
from edgekit.inputs import images as _images
from edgekit.inputs import prepare as _prepare
from edgekit.inputs import synthetic as _synthetic
from edgekit.inputs.data import *  # noqa: F403
from edgekit.inputs.datasets import *  # noqa: F403
from edgekit.inputs.folders import *  # noqa: F403
from edgekit.inputs.images import *  # noqa: F403
from edgekit.inputs.prepare import *  # noqa: F403
from edgekit.inputs.synthetic import *  # noqa: F403

__all__ = [*_data.__all__, *_datasets.__all__, *_folders.__all__, *_images.__all__,
           *_prepare.__all__, *_synthetic.__all__]
