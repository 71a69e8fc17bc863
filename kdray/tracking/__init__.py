"""MLflow: runs, tags, params and the one-op RunLogger (runs.py), what is kept while the tracking
server is away (outage.py), a store's files from its URI without MLflow (stores.py), the local
server command (server.py), a run's data splits as MLflow datasets (datasets.py). Imports only
the base modules."""
