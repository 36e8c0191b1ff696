"""Training: one loop for any model and task, the language-model task, and the run's files."""
