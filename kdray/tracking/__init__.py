"""MLflow: runs, tags, params and the one-op RunLogger (runs.py), what is kept while the tracking
server is away (outage.py), a store's files from its URI without MLflow (stores.py), the local
server command (server.py), a run's data splits as MLflow datasets (datasets.py), trained
students as MLflow models and registry versions (models.py, with the pyfunc stored with each:
student_pyfunc.py). Imports only the base modules and the study's prompt (kdray.data)."""
