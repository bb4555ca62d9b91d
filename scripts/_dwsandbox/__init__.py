"""The local sandbox of the Doubleword Batch API, as a package (``scripts/sandbox_server.py`` runs it).

Standard library only, plus standard-library-only modules of the client package:
``_dwbatches.core.compat`` (platform differences), ``_dwbatches.core.urls`` (what is loopback),
``_dwbatches.cost.pricing`` (the price table) and the facts both share, ``_dwbatches.core.apifacts``
(allowed urls, completion windows, reserved metadata keys, file and line limits) and
``_dwbatches.api.reasoning`` (which models think, the efforts each takes).

Modules, from the wire up:

- ``wire.py``: responses, ApiError (plain text; the busy JSON of 429/503; the OpenAI envelope),
  serde-style messages, UUID ids, the lines of input, output and error files.
- ``config.py``: product constants (default models, page sizes, the sandbox user), Config, log.
- ``faults.py``: the fault document, its validation and counters, the reply of an http rule.
- ``store.py``: the SQLite schema and Store (pooled reads, serialised writes); request counts
  and a batch's derived status.
- ``backends.py``: BuiltinModel (deterministic echo, JSON when asked; reasoning models think first;
  cut at max_tokens; bad answers on demand) and UpstreamBackend (``--upstream``: no redirects
  followed; ``upstream_refusal``, the upstreams the key must not go to).
- ``engine.py``: Engine, the worker threads and the state changes of batches and requests
  (populate, claim, execute, finish, finalize, cancel, requeue).
- ``bodies.py``: BodyReader (Content-Length or chunked), MultipartReader, header parameters.
- ``templates.py``: an uploaded JSONL file checked line by line and stored as templates.
- ``app.py``: App, what every API function shares (config, faults, store, engine, counters),
  auth, the Host check (DNS rebinding), the private data dir and reset.
- ``files_api.py``: upload, list, get, delete, content, cost estimate.
- ``batches_api.py``: create, get, list, cancel, delete, retry, results, analytics.
- ``models_api.py``: /v1/models. ``sandbox_api.py``: /_sandbox/faults, stats, reset.
- ``routing.py``: the route table, Request, Handler (bodies, dispatch, auth, stats, http fault
  rules, sending).
- ``server.py``: SandboxHTTPServer, the command line and its help, the ready line, signals.

A new route: write ``def name(app: App, req: Request) -> Response`` in the API module it belongs
to, add a ``Route`` to ``routing.ROUTES`` and a line to the API list in ``server.EPILOG``.
A new fault: add its field to ``Faults.FIELDS`` and its check to ``Faults.validate``, a method
of ``Faults`` that reads it, the call where it takes effect (engine.py for requests,
files_api.py for downloads and uploads, routing.py for whole HTTP exchanges) and a line to
the fault document in ``server.EPILOG``.

The one way to start the server from Python (tests, check_setup --sandbox, the demo, the
benchmarks) is ``_dwbatches.core.sandbox.SandboxProcess``.
"""

__version__ = "1.0.0"
