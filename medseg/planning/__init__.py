"""Self-configuration: dataset fingerprint → editable plan → training setup.

- :mod:`medseg.planning.fingerprint`: what the data looks like (``medseg inspect``).
- :mod:`medseg.planning.planner`: the decisions, each with a reason (``medseg plan``), using
  :mod:`~medseg.planning.spacing`, :mod:`~medseg.planning.normalization`,
  :mod:`~medseg.planning.topology` and :mod:`~medseg.planning.memory`.
- :mod:`medseg.planning.plan`: ``plan.json``, versioned and validated on load.

A plan becomes a training setup in :mod:`medseg.training.planned` (training sits above planning).
"""
