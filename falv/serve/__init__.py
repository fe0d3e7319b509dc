"""``falv serve``: labeling as a service (FastAPI + uvicorn, the ``falv[serve]`` extra).

- :mod:`falv.serve.service`: the model, the engine thread and the persistent queue;
- :mod:`falv.serve.jobs`: jobs and corrections in SQLite under the data dir;
- :mod:`falv.serve.app`: the HTTP routes (jobs, exports, corrections, Label Studio's
  ML backend), auth and limits;
- :mod:`falv.serve.labelstudio`: Label Studio's protocol; :mod:`falv.serve.corrections`:
  corrections as a training source.

See docs/serving.md.
"""
