"""The study's real world: hub models and pairs (zoo.py), the task registry (tasks.py), loaders and
checks of task files (task_files.py), a domain's data folder (world.py) and one probe of the hub
(probe.py). Imports config, eval (answer kinds) and the base modules."""
