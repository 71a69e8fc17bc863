"""What a trial reads of its teacher: the choice of signal (signal.py), the log-prob cache
(cache.py: built by Ray tasks, read by workers) and the online placements (placement.py).
Imports config, data, losses and the base modules; the teacher's preparation, which trains, is
the study's (kdray.study.teachers)."""
