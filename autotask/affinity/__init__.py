"""Inter-task affinity measured by training: the estimators (TAG lookahead, gradient
cosine, pairwise, RSA) and where their matrices are stored. The matrices themselves and
what is computed from them live in :mod:`autotask.select`."""
