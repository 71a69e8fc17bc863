"""One trial in the Tune driver (driver.py): its MLflow child run, its Ray Train run, its result or
failure, its student logged as an MLflow model. Imports eval, train, tracking, config and the base
modules."""
