"""The search: study configuration, sampling, Δm scoring, running a study, refinement,
seeding and pruning. The Optuna side (storage, worker gate, objectives, launcher) is in
:mod:`autotask.search.backend`."""
