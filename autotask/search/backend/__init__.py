"""The Optuna side of a study: storage URLs, stored study records, objectives, the
multi-worker gate, proposals and the worker launcher."""
