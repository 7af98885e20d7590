"""``rag serve``: the HTTP face of the engine (FastAPI + uvicorn).

Modules: :mod:`.app` (routes and middleware), :mod:`.auth` (API keys -> principals),
:mod:`.schemas` (request models and wire types, the same schema as ``--json``), :mod:`.jobs`
(background ingest and delete jobs), :mod:`.service` (what the routes ask of the shared
:class:`rag.RAG`), :mod:`.cli` (the ``rag serve`` command), ``static/index.html`` (the page).

Importing this package is cheap: FastAPI, uvicorn and prometheus-client load only when a
server is built (:func:`rag.server.app.create_app`).
"""
