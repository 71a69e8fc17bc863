"""The study's real world: hub models and pairs (zoo.py), the task registry (tasks.py), loaders and
checks of task files (task_files.py) and a domain's data folder (world.py). Imports config, eval
(answer kinds) and the base modules."""
