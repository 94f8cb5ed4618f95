"""A third API, added as a plug-in without touching any shared module (issue 24): a search
index with one batch endpoint, scoped by ``index``. The worker loads it when
``BULKOPS_API_AREAS=tests.plugin_api``; ``server`` is its fake HTTP server."""
