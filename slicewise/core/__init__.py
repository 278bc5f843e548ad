"""The core layer: what training, service and monitoring share, importing none of them.

- `contracts`: the artifact bundle, manifest, prediction-log record, Redis keys, metric names;
- `errors`: `SlicewiseError`, the one base class every slicewise error derives from;
- `slice_rules`: the slice-rule evaluator (keywords / regex / word count), one code path for
  training and serving;
- `redis_server`: a real local Redis server process for the demo, the service and the tests.

Nothing here imports torch, pandas (except lazily), `training`, `service` or `monitoring`
(`tests/unit/test_layers.py` keeps it so): the serving bento packs this folder and `service/`.
"""
