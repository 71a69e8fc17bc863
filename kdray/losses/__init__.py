"""The pure distillation losses (divergences.py: KD, Rev-KD, skew KL, GKD's JSD, CE, teacher-logit
noise, the sparse cached teacher) and GKD's on-policy batches (on_policy.py). Imports config,
data."""
