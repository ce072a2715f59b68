"""HyperSpy users stay in HyperSpy: signals in, a ``community_map`` signal out.

>>> import hyperspy.api as hs                                    # doctest: +SKIP
>>> import multimodal_seg.hyperspy as mh                         # doctest: +SKIP
>>> cmap = mh.segment({"haadf": haadf, "eels": eels})            # doctest: +SKIP
>>> cmap.plot(haadf)                                             # doctest: +SKIP
>>> cmap.get_community_signals(eels).plot()                      # doctest: +SKIP
>>> eels.cluster_analysis("decomposition", algorithm=mh.LeidenClustering())  # doctest: +SKIP

- :func:`segment` (:mod:`.segment`): the package's ``segment`` for signals.
- :class:`CommunityMap`, :class:`LazyCommunityMap` (:mod:`.signals`): the result, a
  HyperSpy extension signal (``signal_type="community_map"``).
- :class:`LeidenClustering` (:mod:`.clustering`): the graph and community step as a
  scikit-learn estimator, for HyperSpy's ``cluster_analysis``.
- :func:`to_modality`, :func:`to_signal` (:mod:`.convert`): one signal as a
  ``ModalityData`` and back.
"""

from .clustering import LeidenClustering
from .convert import to_modality, to_signal
from .segment import segment, to_community_map
from .signals import CommunityMap, LazyCommunityMap

__all__ = ["segment", "to_community_map", "to_modality", "to_signal", "CommunityMap", "LazyCommunityMap",
           "LeidenClustering"]
